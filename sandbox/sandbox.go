// Package sandbox starts a child in its own process group, with a
// parent-death signal and exactly the environment it is given.
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type Spec struct {
	Path string
	Args []string
	Env  []string
	Dir  string
}

type Process struct {
	Pid            int
	Stdin          io.WriteCloser
	Stdout, Stderr io.ReadCloser
	proc           *os.Process
	start          time.Time
}

type State struct {
	ExitCode int
	Signal   syscall.Signal
	Wall     time.Duration
	Rusage   syscall.Rusage
}

type SpawnError struct {
	Path string
	Code int
	Err  error
}

func (e *SpawnError) Error() string { return fmt.Sprintf("cannot run %s: %v", e.Path, e.Err) }
func (e *SpawnError) Unwrap() error { return e.Err }

func Start(spec *Spec) (*Process, error) {
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	env := spec.Env
	if env == nil {
		env = []string{}
	}
	attr := &os.ProcAttr{Dir: dir, Env: env, Files: []*os.File{inR, outW, errW},
		Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}}
	start := time.Now()
	proc, err := os.StartProcess(spec.Path, spec.Args, attr)
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		code := 126
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
			code = 127
		}
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &SpawnError{Path: spec.Path, Code: code, Err: err}
	}
	return &Process{Pid: proc.Pid, Stdin: inW, Stdout: outR, Stderr: errR, proc: proc, start: start}, nil
}

func (p *Process) Signal(sig syscall.Signal) error {
	if err := unix.Kill(-p.Pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

func (p *Process) Wait() (*State, error) {
	ps, err := p.proc.Wait()
	if err != nil {
		return nil, err
	}
	st := &State{ExitCode: ps.ExitCode(), Wall: time.Since(p.start)}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		st.Signal = ws.Signal()
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok && ru != nil {
		st.Rusage = *ru
	}
	return st, nil
}
