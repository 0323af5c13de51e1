package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/server"
)

// serveOptions are the server's command-line settings.
type serveOptions struct {
	version     bool
	debug       bool
	backlog     int
	mode        string
	maxConns    int
	timeout     float64
	killTimeout float64
	socket      string
}

// valueFlags are the single-letter flags that take a value; getopt lets
// sockexec users write them glued to their value ("-t0"), so we do too.
const valueFlags = "qMmtk"

func parseServeFlags(args []string, stderr io.Writer) (*serveOptions, error) {
	o := &serveOptions{}
	fs := flag.NewFlagSet("sockwarden", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.version, "v", false, "print the version and exit")
	fs.BoolVar(&o.debug, "d", false, "log at debug level")
	fs.IntVar(&o.backlog, "q", 100, "listen(2) backlog: connections queued before accept")
	fs.StringVar(&o.mode, "M", "0660", "permission bits of the socket file, in octal")
	fs.IntVar(&o.maxConns, "m", server.DefaultMaxConns, "connections served at once; extra ones are closed at once")
	fs.Float64Var(&o.timeout, "t", server.DefaultDeadline.Seconds(), "seconds a connection may last before its program is killed (0 = no limit)")
	fs.Float64Var(&o.killTimeout, "k", server.DefaultKillTimeout.Seconds(), "seconds between SIGTERM and SIGKILL when a program is killed")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sockwarden [-v] [-d] [-q backlog] [-M mode] [-m max-conns] [-t secs] [-k secs] /path/to/socket\n\n")
		fmt.Fprintf(stderr, "Serves the sockexec protocol on the socket. Until a policy is configured, only\n")
		fmt.Fprintf(stderr, "callers with the server's own uid (or root) may run programs.\n")
		fmt.Fprintf(stderr, "Other subcommands: sockwarden help.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(splitGlued(args, valueFlags)); err != nil {
		return nil, err
	}
	if o.version {
		return o, nil
	}
	switch fs.NArg() {
	case 1:
		o.socket = fs.Arg(0)
	case 0:
		fs.Usage()
		return nil, errors.New("missing socket path")
	default:
		fs.Usage()
		return nil, fmt.Errorf("one socket path expected, got %q", fs.Args())
	}
	if o.timeout < 0 || o.killTimeout <= 0 {
		return nil, errors.New("-t must be >= 0 and -k > 0")
	}
	if o.backlog <= 0 || o.maxConns <= 0 {
		return nil, errors.New("-q and -m must be positive")
	}
	if _, err := parseMode(o.mode); err != nil {
		return nil, err
	}
	return o, nil
}

// splitGlued turns getopt's glued forms into separate arguments:
// "-t0" -> "-t", "0" for the flags in takes, and "-vd" -> "-v", "-d".
// It stops at the first positional argument or "--".
func splitGlued(args []string, takes string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--" || a == "-" || !strings.HasPrefix(a, "-"):
			return append(out, args[i:]...)
		case strings.HasPrefix(a, "--") || strings.Contains(a, "="):
			out = append(out, a)
			continue
		}
		for j := 1; j < len(a); j++ {
			out = append(out, "-"+a[j:j+1])
			if strings.IndexByte(takes, a[j]) < 0 {
				continue
			}
			if j+1 < len(a) {
				out = append(out, a[j+1:])
			} else if i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
			break
		}
	}
	return out
}

func parseMode(s string) (os.FileMode, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("-M %q: want octal permission bits such as 0660", s)
	}
	return os.FileMode(m), nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// newLogger returns the operator logger: colored text on a terminal,
// JSON otherwise.
func newLogger(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// serve runs the server until SIGTERM or SIGINT and returns the exit
// status.
func serve(args []string, stderr io.Writer) int {
	o, err := parseServeFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden: %v\n", err)
		return 2
	}
	if o.version {
		fmt.Fprintln(os.Stdout, versionString())
		return 0
	}
	log := newLogger(stderr, o.debug)
	slog.SetDefault(log)
	mode, _ := parseMode(o.mode)

	deadline := seconds(o.timeout)
	if o.timeout == 0 {
		deadline = -1
	}
	srv := server.New(server.Config{
		Socket:      o.socket,
		MaxConns:    o.maxConns,
		Deadline:    deadline,
		KillTimeout: seconds(o.killTimeout),
		Logger:      log,
	})

	// Signals are caught before the socket exists, so none is lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)

	l, err := server.Listen(server.ListenConfig{Path: o.socket, Mode: mode, UID: -1, GID: -1, Backlog: o.backlog})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	created, err := os.Lstat(o.socket)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	log.Info("serving", "version", versionString(), "socket", o.socket, "mode", fmt.Sprintf("%#o", mode),
		"max_conns", o.maxConns, "backlog", o.backlog, "timeout", deadline, "kill_timeout", seconds(o.killTimeout),
		"policy", "server uid or root only (no policy configured)")

	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	status := 0
loop:
	for {
		select {
		case err := <-served:
			log.Error("server stopped", "err", err)
			status = 1
			break loop
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				dumpState(log, srv)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			break loop
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), seconds(o.killTimeout)+5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Error("shutdown incomplete", "err", err)
		status = 1
	}
	// Remove the socket only if it is still ours.
	if cur, err := os.Lstat(o.socket); err == nil && os.SameFile(cur, created) {
		os.Remove(o.socket)
	}
	log.Info("stopped", "served", srv.Stats().Served)
	return status
}

// dumpState logs every live connection, as sockexec does on SIGUSR1.
func dumpState(log *slog.Logger, srv *server.Server) {
	st := srv.Stats()
	log.Info("state", "active", st.Active, "served", st.Served, "rejected", st.Rejected)
	for _, c := range srv.Conns() {
		log.Info("connection", "request_id", c.RequestID, "peer_pid", c.Peer.Pid, "peer_uid", c.Peer.UID,
			"argv", c.Argv, "child_pid", c.ChildPid, "age", time.Since(c.Since).Round(time.Millisecond))
	}
}
