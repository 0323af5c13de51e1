package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/internal/kaudit"
)

// Sandbox denials.
//
// When Landlock refuses a child something, the program sees EACCES and
// nothing more. With a [DenialWatcher] in [Options].Denials, a Spawner
// asks the kernel to log the Landlock denials of each child
// (landlock_restrict_self with LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON,
// Landlock ABI 7), and the watcher reads them from the kernel's audit
// records (NETLINK_AUDIT, group AUDIT_NLGRP_READLOG), sorted by child:
// [Process.Denials].
//
// The records name a Landlock domain, not a process. The record that
// allocates a domain (type 1424, status=allocated) names the pid that
// created it, but the kernel writes it only with the domain's first
// logged denial, which may come from a descendant long after that pid
// was reused. So each child makes one denial on purpose right after
// landlock_restrict_self, before its exec: an ioctl on /dev/null, which
// Landlock refuses to every domain (no rule grants fs.ioctl_dev). Its
// records arrive at once, while the pid is surely the child's and the
// server's executable is the record's exe; the watcher leaves that
// denial out of the report.
//
// When the last process of the domain is gone the kernel writes its
// final count (status=deallocated denials=N), 30-70 ms after the child
// is reaped. A report is final then, or [DenialFinalWait] after the
// child was reaped if the count never comes; it is complete when every
// denial the kernel counted was received (records are lost when the
// kernel's backlog overflows in a burst).

// DenialFinalWait bounds how long after a child ends its denial report
// waits for the kernel's final count.
const DenialFinalWait = 3 * time.Second

// Bounds of a report and of the watcher's memory.
const (
	maxDenialsListed  = 32   // distinct denials listed per child
	maxDenialTarget   = 256  // bytes of a target
	maxUnclaimed      = 4096 // domains not (yet) known to be a child's
	unclaimedTTL      = 10 * time.Second
	maxUnclaimedQueue = 64 // denials kept per unclaimed domain
)

// Denial is one kind of access the sandbox refused a child, as the
// kernel's Landlock audit records name it.
type Denial struct {
	// Access is the refused access right, as Landlock names it
	// ("fs.write_file", "fs.execute", "net.connect_tcp",
	// "scope.signal"), or several joined by commas.
	Access string
	// Target is what it was refused on: a path (for a file created or
	// removed, the directory it is in), "ADDR:PORT" for TCP, or
	// "pid N (COMM)" for a signal.
	Target string
	// Count is how many times the child was refused this.
	Count int
}

// DenialReport is what the kernel has reported of a child's sandbox
// denials.
type DenialReport struct {
	// Denials are the distinct denials in the order they first came,
	// at most 32.
	Denials []Denial
	// Received counts the denials received, repeats included.
	Received int
	// Unlisted counts those received but not in Denials (past the 32
	// distinct ones).
	Unlisted int
	// Total is the kernel's count of the child's denials, -1 until it
	// is known.
	Total int
	// Final is true once the kernel's count came, or the wait for it
	// ended (DenialFinalWait after the child ended, or the watcher was
	// closed).
	Final bool
	// Complete is true when Final and every denial the kernel counted
	// was received.
	Complete bool
}

// DenialWatcher reads the kernel's Landlock audit records and sorts the
// denials by child. One serves any number of Spawners; it needs
// CAP_AUDIT_READ and the initial network namespace, and the kernel's
// audit enabled (see package internal/kaudit).
type DenialWatcher struct {
	r   *kaudit.Reader
	exe string // the server's executable, the exe of its children's domains

	mu        sync.Mutex
	byPID     map[int]*denialTrack     // started children whose domain is not known yet
	domains   map[uint64]*denialDomain // domains seen
	lastSweep time.Time
	closed    bool

	overruns, foreign int64
	done              chan struct{}
}

// denialDomain is a Landlock domain seen in the records: a child's once
// claimed, before that its queued denials.
type denialDomain struct {
	track   *denialTrack
	pid     int  // its creator, from the allocated record
	foreign bool // not the server's child
	seen    time.Time
	queue   []kaudit.Parsed // denials while unclaimed
	queued  int             // all of them, including those not kept
}

// denialTrack is the report of one child.
type denialTrack struct {
	mu        sync.Mutex
	report    DenialReport
	index     map[[2]string]int
	all       int  // records received, the probe included
	probeSeen bool // the child's own first denial came
	final     chan struct{}
	timer     *time.Timer
}

// WatchDenials joins the kernel's audit read-log group and starts
// sorting its Landlock records. It fails where the process may not read
// them.
func WatchDenials() (*DenialWatcher, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("sandbox: denial watcher: %w", err)
	}
	// A burst of denials must not overflow the socket: 8 MiB holds tens
	// of thousands of records.
	r, err := kaudit.Listen(8 << 20)
	if err != nil {
		return nil, fmt.Errorf("sandbox: denial watcher: %w", err)
	}
	w := &DenialWatcher{
		r:       r,
		exe:     exe,
		byPID:   map[int]*denialTrack{},
		domains: map[uint64]*denialDomain{},
		done:    make(chan struct{}),
	}
	go w.run()
	return w, nil
}

// Close stops reading; every report not final yet becomes final without
// the kernel's count.
func (w *DenialWatcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	err := w.r.Close()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	for pid, t := range w.byPID {
		t.finish(-1)
		delete(w.byPID, pid)
	}
	for id, d := range w.domains {
		if d.track != nil {
			d.track.finish(-1)
		}
		delete(w.domains, id)
	}
	return err
}

// Overruns counts the times records were lost because the watcher's
// socket was full.
func (w *DenialWatcher) Overruns() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.overruns
}

func (w *DenialWatcher) run() {
	defer close(w.done)
	for {
		rec, err := w.r.Read()
		switch {
		case errors.Is(err, kaudit.ErrOverrun):
			w.mu.Lock()
			w.overruns++
			w.mu.Unlock()
			continue
		case errors.Is(err, kaudit.ErrMalformed):
			continue
		case err != nil:
			// Closed (or a socket error no retry mends): the reports
			// still open become final at their deadline, without the
			// kernel's count.
			return
		}
		if rec.Type != unix.AUDIT_LANDLOCK_ACCESS && rec.Type != unix.AUDIT_LANDLOCK_DOMAIN {
			continue
		}
		p, err := kaudit.Parse(rec.Data)
		if err != nil {
			continue
		}
		w.handle(rec.Type, &p)
	}
}

// handle sorts one Landlock record.
func (w *DenialWatcher) handle(typ uint16, p *kaudit.Parsed) {
	id, ok := p.Uint("domain", 16)
	if !ok {
		return
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.lastSweep) > time.Second {
		w.sweep(now)
	}
	d := w.domains[id]
	if d == nil {
		if len(w.domains) >= maxUnclaimed {
			return
		}
		d = &denialDomain{seen: now}
		w.domains[id] = d
	}
	if typ == unix.AUDIT_LANDLOCK_ACCESS {
		switch {
		case d.track != nil:
			d.track.add(p)
		case !d.foreign:
			d.queued++
			if len(d.queue) < maxUnclaimedQueue {
				d.queue = append(d.queue, *p)
			}
		}
		return
	}
	switch p.Value("status") {
	case "allocated":
		pid, ok := p.Uint("pid", 10)
		exe, _ := p.Get("exe")
		if !ok || !w.isServer(exe.Text()) {
			d.foreign, d.queue = true, nil
			w.foreign++
			return
		}
		d.pid = int(pid)
		if t := w.byPID[d.pid]; t != nil {
			delete(w.byPID, d.pid)
			w.claim(d, t)
		}
	case "deallocated":
		n, _ := p.Uint("denials", 10)
		if d.track != nil {
			d.track.finish(int(n))
		}
		delete(w.domains, id)
	}
}

// isServer tells whether exe, a domain creator's executable, is this
// server's (the children make their domain before they exec).
func (w *DenialWatcher) isServer(exe string) bool {
	return exe == w.exe || exe == w.exe+" (deleted)"
}

// claim makes d the domain of t and hands it the denials that came first.
func (w *DenialWatcher) claim(d *denialDomain, t *denialTrack) {
	d.track = t
	t.mu.Lock()
	for i := range d.queue {
		t.addLocked(&d.queue[i])
	}
	// Denials queued beyond the queue's bound still count as received
	// (the report lists fewer than it counts).
	if extra := d.queued - len(d.queue); extra > 0 {
		t.all += extra
		t.report.Received += extra
		t.report.Unlisted += extra
	}
	t.mu.Unlock()
	d.queue = nil
}

// sweep forgets domains nobody claimed for unclaimedTTL.
func (w *DenialWatcher) sweep(now time.Time) {
	w.lastSweep = now
	for id, d := range w.domains {
		if d.track == nil && now.Sub(d.seen) > unclaimedTTL {
			delete(w.domains, id)
		}
	}
}

// register starts the report of the child pid, which has made its
// domain and its first denial (the fork returns after the exec).
func (w *DenialWatcher) register(pid int) *denialTrack {
	t := &denialTrack{
		report: DenialReport{Total: -1},
		index:  map[[2]string]int{},
		final:  make(chan struct{}),
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		t.finish(-1)
		return t
	}
	for _, d := range w.domains {
		if d.pid == pid && d.track == nil && !d.foreign {
			w.claim(d, t)
			return t
		}
	}
	w.byPID[pid] = t
	return t
}

// ended starts the wait for the kernel's final count of t, whose child
// pid has been reaped.
func (w *DenialWatcher) ended(pid int, t *denialTrack) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.report.Final || t.timer != nil {
		return
	}
	t.timer = time.AfterFunc(DenialFinalWait, func() {
		w.mu.Lock()
		if w.byPID[pid] == t {
			delete(w.byPID, pid)
		}
		for id, d := range w.domains {
			if d.track == t {
				delete(w.domains, id)
			}
		}
		w.mu.Unlock()
		t.finish(-1)
	})
}

// add counts one denial record of t's domain.
func (t *denialTrack) add(p *kaudit.Parsed) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addLocked(p)
}

func (t *denialTrack) addLocked(p *kaudit.Parsed) {
	if t.report.Final {
		return
	}
	access, target := p.Value("blockers"), denialTarget(p)
	t.all++
	if !t.probeSeen && t.all == 1 && target == "/dev/null" &&
		(access == "fs.ioctl_dev" || access == "fs.read_file") {
		// The child's own denial, made to name its domain.
		t.probeSeen = true
		return
	}
	t.report.Received++
	key := [2]string{access, target}
	if i, ok := t.index[key]; ok {
		t.report.Denials[i].Count++
		return
	}
	if len(t.report.Denials) >= maxDenialsListed {
		t.report.Unlisted++
		return
	}
	t.index[key] = len(t.report.Denials)
	t.report.Denials = append(t.report.Denials, Denial{Access: access, Target: target, Count: 1})
}

// finish makes t's report final, with the kernel's count n of the
// domain's denials (its own first one included), -1 when unknown.
func (t *denialTrack) finish(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.report.Final {
		return
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	t.report.Final = true
	if n >= 0 {
		// The kernel counts the child's own first denial, made whether
		// its record came or not.
		t.report.Total = n - 1
		t.report.Complete = t.all == n
	}
	close(t.final)
}

// snapshot returns a copy of the report.
func (t *denialTrack) snapshot() DenialReport {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.report
	r.Denials = append([]Denial(nil), r.Denials...)
	return r
}

// denialTarget names what a denial record says was refused.
func denialTarget(p *kaudit.Parsed) string {
	var s string
	switch {
	case has(p, "path"):
		f, _ := p.Get("path")
		s = f.Text()
	case has(p, "name"):
		f, _ := p.Get("name")
		s = f.Text()
	case has(p, "daddr"):
		s = net.JoinHostPort(p.Value("daddr"), p.Value("dest"))
	case has(p, "saddr"):
		s = net.JoinHostPort(p.Value("saddr"), p.Value("src"))
	case has(p, "opid"):
		f, _ := p.Get("ocomm")
		s = "pid " + p.Value("opid") + " (" + f.Text() + ")"
	}
	if len(s) > maxDenialTarget {
		s = s[:maxDenialTarget]
	}
	return s
}

func has(p *kaudit.Parsed, key string) bool {
	_, ok := p.Get(key)
	return ok
}

// Denials returns what the kernel has reported of the child's sandbox
// denials so far, and false when they are not reported (no
// [DenialWatcher], no Landlock for the child, or Landlock ABI below 7).
func (p *Process) Denials() (DenialReport, bool) {
	if p.denials == nil {
		return DenialReport{}, false
	}
	return p.denials.snapshot(), true
}

// WaitDenials waits until the child's denial report is final (after
// Wait: the kernel's count comes once the child's last process is gone)
// or ctx is done, and returns it as [Process.Denials] does.
func (p *Process) WaitDenials(ctx context.Context) (DenialReport, bool) {
	if p.denials == nil {
		return DenialReport{}, false
	}
	select {
	case <-p.denials.final:
	case <-ctx.Done():
	}
	return p.denials.snapshot(), true
}

// String formats a denial for a person: "fs.execute on /srv/run.sh".
func (d Denial) String() string {
	if d.Target == "" {
		return d.Access
	}
	t := d.Target
	if strings.ContainsFunc(t, func(r rune) bool { return !unicode.IsPrint(r) }) {
		t = strconv.Quote(t)
	}
	return d.Access + " on " + t
}
