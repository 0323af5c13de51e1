package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A System V segment left by one request: with an IPC namespace per
// request the next request cannot find it and the host never sees it;
// without, the next request reads it and it outlives its request.
func TestPrivateIPC(t *testing.T) {
	t.Parallel()
	needRoot(t)
	for _, private := range []bool{true, false} {
		t.Run(fmt.Sprintf("private=%v", private), func(t *testing.T) {
			key := 0x5a000000 + rand.IntN(1<<20)
			t.Cleanup(func() {
				if id, err := unix.SysvShmGet(key, 0, 0); err == nil {
					unix.SysvShmCtl(id, unix.IPC_RMID, nil)
				}
			})
			spec := func(args ...string) *Spec {
				return &Spec{Path: testprog, Args: append([]string{"testprog"}, args...), Credential: nobody, PrivateIPC: private}
			}
			if r := run(t, spec("shm-write", fmt.Sprint(key))); r.stdout != "ok\n" {
				t.Fatalf("request 1: %q %q", r.stdout, r.stderr)
			}
			r := run(t, spec("shm-read", fmt.Sprint(key)))
			_, hostErr := unix.SysvShmGet(key, 0, 0)
			if private {
				if r.stdout != "error: shmget: no such file or directory\n" {
					t.Errorf("request 2 got %q, want the segment not found", r.stdout)
				}
				if !errors.Is(hostErr, unix.ENOENT) {
					t.Errorf("the host finds the segment after its request: %v", hostErr)
				}
				return
			}
			if r.stdout != "ok secret\n" {
				t.Errorf("control: request 2 got %q (%q), want it to read request 1's segment", r.stdout, r.stderr)
			}
			if hostErr != nil {
				t.Errorf("control: the segment did not outlive its request: %v", hostErr)
			}
		})
	}
}

// Everything a child cut off from the network tries fails: TCP and UDP to
// the host's loopback, an abstract socket the host could reach, and the
// interfaces it sees. The controls, the same probes without NoNetwork,
// succeed.
func TestNoNetwork(t *testing.T) {
	t.Parallel()
	needRoot(t)
	tcpPort := replier(t)
	udpPort, udpGot := udpSink(t)
	tests := []struct {
		name      string
		args      []string
		none, ctl string // stdout prefixes with and without the layer
	}{
		{"TCP to loopback", []string{"dial", fmt.Sprint("127.0.0.1:", tcpPort)}, "error: dial tcp 127.0.0.1:" + fmt.Sprint(tcpPort) + ": connect: network is unreachable", "ok"},
		{"UDP to loopback", []string{"udp", fmt.Sprint(udpPort)}, "error: network is unreachable", "ok"},
		{"interfaces", []string{"interfaces"}, "ok lo:down\n", "ok lo:up"},
	}
	for _, tt := range tests {
		for _, none := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s none=%v", tt.name, none), func(t *testing.T) {
				r := run(t, &Spec{Path: testprog, Args: append([]string{"testprog"}, tt.args...), Credential: nobody, NoNetwork: none})
				want := tt.ctl
				if none {
					want = tt.none
				}
				if !strings.HasPrefix(r.stdout, want) || (none && tt.name == "interfaces" && r.stdout != want) {
					t.Errorf("got %q (stderr %q), want %q", r.stdout, r.stderr, want)
				}
			})
		}
	}
	select {
	case <-udpGot: // the control's
	case <-time.After(5 * time.Second):
		t.Error("the control's UDP datagram never arrived")
	}
	for _, none := range []bool{true, false} {
		t.Run(fmt.Sprintf("abstract socket none=%v", none), func(t *testing.T) {
			name := fmt.Sprintf("sockwarden-test-%d", rand.Int64())
			p, err := testSpawner.Start(&Spec{Path: testprog, Args: []string{"testprog", "abstract-listen", name}, Credential: nobody, NoNetwork: none})
			if err != nil {
				t.Fatal(err)
			}
			out := bufio.NewReader(p.Stdout)
			if line, _ := out.ReadString('\n'); line != "listening\n" {
				t.Fatalf("child: %q", line)
			}
			c, dialErr := net.Dial("unix", "@"+name)
			if dialErr == nil {
				c.Write([]byte("from the host"))
				c.Close()
			}
			rest, _ := bufio.NewReader(out).ReadString('\n')
			r := collect(t, p)
			if none {
				if dialErr == nil || !strings.HasPrefix(rest, "error: accept") {
					t.Errorf("the host reached the child's abstract socket (dial %v, child %q %q)", dialErr, rest, r.stderr)
				}
				return
			}
			if dialErr != nil || rest != "ok from the host\n" {
				t.Errorf("control: dial %v, child %q", dialErr, rest)
			}
		})
	}
}
