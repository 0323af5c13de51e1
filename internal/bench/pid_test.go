package bench

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFindServerPID(t *testing.T) {
	// The server package binds a temporary name and renames it into
	// place: only sock_diag, which matches the file's inode, finds it.
	sock := startServer(t)
	pid, how, err := FindServerPID(sock)
	if err != nil || pid != os.Getpid() || how != PIDFromSockDiag {
		t.Fatalf("FindServerPID(renamed socket) = %d, %q, %v; want %d via %s", pid, how, err, os.Getpid(), PIDFromSockDiag)
	}
	if _, err := procNetUnixInodes("/proc/net/unix", sock); err == nil {
		t.Log("note: /proc/net/unix lists the renamed socket under its final path")
	}

	// A socket bound in place is also listed under its path in
	// /proc/net/unix.
	plain := filepath.Join(shortDir(t), "plain.sock")
	l, err := net.Listen("unix", plain)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, method := range []string{PIDFromSockDiag, PIDFromProcNet, PIDFromPeerCreds} {
		var got int
		switch method {
		case PIDFromSockDiag:
			inodes, err := diagListenerInodes(plain)
			if err != nil {
				t.Fatalf("sock_diag: %v", err)
			}
			got, err = pidHoldingSocket(inodes)
			if err != nil {
				t.Fatalf("sock_diag: %v", err)
			}
		case PIDFromProcNet:
			inodes, err := procNetUnixInodes("/proc/net/unix", plain)
			if err != nil {
				t.Fatalf("/proc/net/unix: %v", err)
			}
			got, err = pidHoldingSocket(inodes)
			if err != nil {
				t.Fatalf("/proc/net/unix: %v", err)
			}
		case PIDFromPeerCreds:
			got, err = peerCredPID(plain)
			if err != nil {
				t.Fatalf("peercred: %v", err)
			}
		}
		if got != os.Getpid() {
			t.Errorf("%s: pid %d, want %d", method, got, os.Getpid())
		}
	}

	if _, _, err := FindServerPID(filepath.Join(shortDir(t), "none.sock")); err == nil {
		t.Error("FindServerPID(missing socket) succeeded")
	}
}

func TestParseProcNetUnix(t *testing.T) {
	const table = `Num       RefCount Protocol Flags    Type St Inode Path
000000004f0b136b: 00000003 00000000 00000000 0001 03  1123
0000000066c78acb: 00000002 00000000 00010000 0001 01 72967 /tmp/sw1/.sockwarden-e80c361c
000000005b44efa4: 00000002 00000000 00010000 0001 01 72968 /run/exec.sock
000000005b44efa5: 00000003 00000000 00000000 0001 03 72980 /run/exec.sock
000000005b44efa6: 00000002 00000000 00010000 0001 01 72990 /run/with space.sock
000000005b44efa7: 00000002 00000000 00010000 0005 01 72991 @abstract
000000005b44efa8: 00000002 00000000 00010000 0001 01 72992 /run/exec.sock.old
`
	tests := []struct {
		path string
		want []uint64
	}{
		{"/run/exec.sock", []uint64{72968}}, // not the connected 72980
		{"/run/with space.sock", []uint64{72990}},
		{"/tmp/sw1/.sockwarden-e80c361c", []uint64{72967}},
		{"/run/none.sock", nil},
		{"@abstract", []uint64{72991}},
	}
	for _, tt := range tests {
		got, err := parseProcNetUnix(strings.NewReader(table), tt.path)
		if tt.want == nil {
			if err == nil {
				t.Errorf("%s: got %v, want an error", tt.path, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, %v; want %v", tt.path, got, err, tt.want)
		}
	}
}

func TestProgramCounter(t *testing.T) {
	pc := newProgramCounter(os.Getpid(), "/bin/some-program-with-a-long-name")
	if pc.comm != "some-program-wi" {
		t.Errorf("comm = %q, want the kernel's 15-byte cut", pc.comm)
	}
	st, err := readProcStats(os.Getpid())
	if err != nil || st.RSSKiB <= 0 || st.FDs < 3 || st.Threads < 1 {
		t.Errorf("readProcStats(self) = %+v, %v", st, err)
	}
	if _, err := readProcStats(1 << 30); err == nil {
		t.Error("readProcStats(no such pid) succeeded")
	}
}

// TestProcessCPU: the CPU time read from /proc/PID/stat grows by about
// what this process burns, and a process that is gone is an error.
func TestProcessCPU(t *testing.T) {
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
	}
	after, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := after - before; d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("burned 300 ms of CPU; /proc says %v", d)
	}
	if _, err := processCPU(1 << 30); err == nil {
		t.Error("no error for a pid that does not exist")
	}
}
