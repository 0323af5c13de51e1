package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/client"
)

// Exit status of "sockwarden run" when the program's own status is
// unknown: the server could not be reached or broke the protocol.
const statusClientError = 125

// runClient implements "sockwarden run SOCKET -- argv...".
func runClient(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sockwarden run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	noStdin := fs.Bool("n", false, "send no stdin: close the program's stdin at once")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sockwarden run [-n] SOCKET [-n] -- argv...

Runs argv through the sockexec-protocol server at SOCKET. Standard input is
sent to the program (unless -n), its stdout and stderr are written as they
arrive, and sockwarden exits with the program's exit status (128+n if it died
by signal n, %d if the server could not be reached or gave no status).

Flags:
`, statusClientError)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	if len(rest) < 2 {
		fs.Usage()
		return 2
	}
	// Flags may also follow the socket, as in "run SOCK -n -- cat".
	socket := rest[0]
	if err := fs.Parse(rest[1:]); err != nil {
		return 2
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "sockwarden run: no program given")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts := &client.Options{
		OnStdout: func(b []byte) { stdout.Write(b) },
		OnStderr: func(b []byte) { stderr.Write(b) },
	}
	if !*noStdin {
		opts.Stdin = stdin
	}
	res, err := client.New(socket).Run(ctx, argv, opts)
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden run: %v\n", err)
		return statusClientError
	}
	if res.TermSig != "" {
		if n := unix.SignalNum("SIG" + res.TermSig); n != 0 {
			return 128 + int(n)
		}
		return statusClientError
	}
	return res.ExitCode
}
