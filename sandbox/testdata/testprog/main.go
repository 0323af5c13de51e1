// Command testprog is run inside sandboxed children by the sandbox tests:
// each subcommand tries one thing and reports the outcome on stdout.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: testprog CMD [ARGS]")
	}
	arg := func(i int) string {
		if len(os.Args) <= i {
			fail("missing argument")
		}
		return os.Args[i]
	}
	switch os.Args[1] {
	case "dial": // dial HOST:PORT
		c, err := net.DialTimeout("tcp", arg(2), 3*time.Second)
		report(err)
		if c != nil {
			c.Close()
		}
	case "mptcp-dial": // mptcp-dial PORT (127.0.0.1)
		port, _ := strconv.Atoi(arg(2))
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 262)
		if err != nil {
			report(fmt.Errorf("socket: %w", err))
			return
		}
		err = syscall.Connect(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
		report(err)
	case "bind": // bind PORT (127.0.0.1)
		port, _ := strconv.Atoi(arg(2))
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			report(err)
			return
		}
		report(syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}))
	case "writebig": // writebig FILE BYTES
		n, _ := strconv.Atoi(arg(3))
		f, err := os.Create(arg(2))
		if err != nil {
			report(err)
			return
		}
		_, err = f.Write(make([]byte, n))
		report(err)
	case "spin":
		for {
		}
	case "alloc": // alloc MIB: allocate and touch MIB mebibytes
		n, _ := strconv.Atoi(arg(2))
		var keep [][]byte
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println("ok", len(keep))
	case "fds": // the descriptors open at start, read without opening one
		var names []string
		for fd := 0; fd < 1024; fd++ {
			if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0); e == 0 {
				names = append(names, strconv.Itoa(fd))
			}
		}
		fmt.Println(strings.Join(names, " "))
	case "kill": // kill PID SIG
		pid, _ := strconv.Atoi(arg(2))
		sig, _ := strconv.Atoi(arg(3))
		report(syscall.Kill(pid, syscall.Signal(sig)))
	default:
		if !escape(os.Args[1], arg) {
			fail("unknown command " + os.Args[1])
		}
	}
}

func report(err error) {
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}
