package server

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// There is no moment at which the socket path (or the temporary name it
// is bound under) exists with wider permissions or another owner than
// configured: a watcher stats the directory as fast as it can while
// servers are created and removed in a loop.
func TestListenNeverWider(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give the socket another owner")
	}
	const mode, owner, group = 0o640, 65534, 65534
	sock := sockPath(t)
	dir := filepath.Dir(sock)

	var stop atomic.Bool
	var seenFinal, seenTemp atomic.Int64
	var mu sync.Mutex
	var bad []string
	report := func(s string) {
		mu.Lock()
		if len(bad) < 10 {
			bad = append(bad, s)
		}
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			// The final path: always exactly the configured mode and owner.
			var st syscall.Stat_t
			if err := syscall.Lstat(sock, &st); err == nil {
				seenFinal.Add(1)
				if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK || st.Mode&0o7777 != mode || st.Uid != owner || st.Gid != group {
					report(sockDesc("final path", &st))
				}
			}
			// Temporary names: never more than the configured bits.
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if !strings.HasPrefix(e.Name(), ".sockwarden-") {
					continue
				}
				if err := syscall.Lstat(filepath.Join(dir, e.Name()), &st); err == nil {
					seenTemp.Add(1)
					if st.Mode&0o7777&^mode != 0 {
						report(sockDesc(e.Name(), &st))
					}
				}
			}
		}
	}()
	for range 300 {
		l, err := Listen(ListenConfig{Path: sock, Mode: mode, UID: owner, GID: group})
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		os.Remove(sock)
	}
	stop.Store(true)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("socket seen with the wrong mode or owner:\n%s", strings.Join(bad, "\n"))
	}
	// The watcher must have looked at the sockets for the test to mean anything.
	if seenFinal.Load() == 0 {
		t.Fatal("the watcher never saw the socket")
	}
	t.Logf("final path seen %d times, temporary names %d times", seenFinal.Load(), seenTemp.Load())
}

func sockDesc(name string, st *syscall.Stat_t) string {
	return name + ": mode " + os.FileMode(st.Mode&0o7777).String() + " type " +
		map[bool]string{true: "socket", false: "not a socket"}[st.Mode&syscall.S_IFMT == syscall.S_IFSOCK] +
		" owner " + itoa(st.Uid) + ":" + itoa(st.Gid)
}

func itoa(n uint32) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
