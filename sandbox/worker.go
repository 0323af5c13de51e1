package sandbox

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Spawning threads.
//
// Every child is forked by a "worker": a goroutine locked for good to its
// OS thread, so that per-thread state set for a child (no_new_privs,
// Landlock, the seccomp filter, a private fs_struct for the umask) never
// reaches other goroutines, and so that the child's parent-death signal,
// which fires when the thread that forked it dies, fires only when the
// server dies. Hence:
//
//   - a worker that forked a child without changing irreversible thread
//     state is "clean" and is reused for other such children; since its
//     children may still run, it never exits;
//   - a worker whose state was changed ("tainted") serves one child, then
//     parks until Process.Wait has reaped that child and exits, and the
//     runtime destroys its thread;
//   - tainting children need a worker that never forked ("fresh"). A few
//     are kept ready, and some of them "armed" (no_new_privs and the MPTCP
//     seccomp filter already set, which costs a BPF JIT compilation), by a
//     background goroutine, so that thread creation and arming are off the
//     critical path of Start.
//
// Workers park on channels, never in system calls, so that the caller's
// goroutine gets the processor back as soon as the child is started.
type worker struct {
	jobs  chan *launch
	armed bool
	main  bool // locked to the process's main thread: clean jobs only
	tid   int
}

// Pool sizes: idle fresh and armed workers kept ready.
const (
	freshTarget = 2
	armedTarget = 2
)

var pool struct {
	mu        sync.Mutex
	clean     []*worker
	fresh     []*worker
	armed     []*worker
	wantArmed bool // an armed job was seen: keep armed workers ready
	refilling bool
}

// getWorker returns an idle worker suited to l, starting one if needed.
func getWorker(l *launch) *worker {
	pool.mu.Lock()
	pop := func(s *[]*worker) *worker {
		n := len(*s)
		if n == 0 {
			return nil
		}
		w := (*s)[n-1]
		*s = (*s)[:n-1]
		return w
	}
	var w *worker
	switch {
	case !l.taints():
		w = pop(&pool.clean)
		if w == nil {
			w = pop(&pool.fresh)
		}
	case l.armed():
		pool.wantArmed = true
		if w = pop(&pool.armed); w == nil {
			w = pop(&pool.fresh)
		}
	default:
		w = pop(&pool.fresh)
	}
	if !pool.refilling && (len(pool.fresh) < freshTarget || pool.wantArmed && len(pool.armed) < armedTarget) {
		pool.refilling = true
		go refill()
	}
	pool.mu.Unlock()
	if w == nil {
		w = startWorker(false)
	}
	return w
}

// putClean returns a clean worker to the pool.
func putClean(w *worker) {
	pool.mu.Lock()
	pool.clean = append(pool.clean, w)
	pool.mu.Unlock()
}

func refill() {
	for {
		pool.mu.Lock()
		armed := pool.wantArmed && len(pool.armed) < armedTarget
		if !armed && len(pool.fresh) >= freshTarget {
			pool.refilling = false
			pool.mu.Unlock()
			return
		}
		pool.mu.Unlock()
		w := startWorker(armed)
		pool.mu.Lock()
		if w.armed {
			pool.armed = append(pool.armed, w)
		} else {
			pool.fresh = append(pool.fresh, w)
		}
		if armed && !w.armed {
			pool.wantArmed = false // arming fails here: stop trying
		}
		pool.mu.Unlock()
	}
}

// startWorker starts a worker and returns once it is locked to its
// thread (and armed, if asked and possible). A worker that landed on the
// process's main thread is kept for clean jobs only: the runtime does not
// destroy a main thread whose locked goroutine exits but parks it for
// good, and the state a tainting job leaves on it would show in
// /proc/PID/status (NoNewPrivs, Seccomp) as if it were the server's.
func startWorker(arm bool) *worker {
	for {
		w := &worker{jobs: make(chan *launch)}
		ready := make(chan struct{})
		go w.loop(arm, ready)
		<-ready
		if !w.main {
			return w
		}
		putClean(w)
	}
}

func (w *worker) loop(arm bool, ready chan<- struct{}) {
	runtime.LockOSThread()
	w.tid = unix.Gettid()
	w.main = w.tid == mainTID
	// The child's signal mask is the forking thread's (syscall.ForkExec
	// restores it in the child), so make it empty.
	var empty unix.Sigset_t
	unix.PthreadSigmask(unix.SIG_SETMASK, &empty, nil)
	if arm && !w.main {
		w.armed = unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == nil && installMPTCPFilter() == nil
	}
	close(ready)
	for l := range w.jobs {
		if !l.execute(w) {
			putClean(w)
			continue
		}
		// Tainted: serve this child only, stay alive until it is reaped,
		// then exit locked so that the runtime destroys the thread.
		<-l.release
		return
	}
}

var mainTID = unix.Getpid()
