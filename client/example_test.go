package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/sockwarden/sockwarden/client"
	"github.com/sockwarden/sockwarden/plan"
	"github.com/sockwarden/sockwarden/server"
)

func Example() {
	// A server to talk to; in real use it is a running sockwarden.
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "exec.sock")
	l, err := server.Listen(server.ListenConfig{Path: sock, Mode: 0o600, UID: -1, GID: -1})
	if err != nil {
		log.Fatal(err)
	}
	// Without an Authorizer it admits callers of its own uid, and runs
	// their programs as itself: allowed here even as root.
	srv, err := server.New(server.Config{Defaults: plan.Defaults{AllowRoot: true}})
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	c := client.New(sock)
	res, err := c.Run(context.Background(), []string{"echo", "hello"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q exit %d\n", res.Stdout, res.ExitCode)
	// Output: "hello\n" exit 0
}
