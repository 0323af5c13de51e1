package server

import "strconv"

// ConnState is where a connection is in its life. A connection goes
// through the states in order, skipping those that do not apply:
//
//	reading -> judging -> running -> finishing -> lingering -> closed
//
// A request that never runs (malformed, denied, not startable) goes from
// reading or judging to finishing (its reply) or straight to closed.
type ConnState int32

const (
	// StateReading: reading the argc and argv (bounded by the deadline).
	StateReading ConnState = iota
	// StateJudging: the policy judges the request and the server plans
	// and records it.
	StateJudging
	// StateRunning: the program runs; stdin, stdout and stderr flow.
	StateRunning
	// StateFinishing: the program has exited (or never ran): draining its
	// output, recording its end, sending the final pair.
	StateFinishing
	// StateLingering: the reply is sent and the connection half-closed;
	// late client input is read and dropped for a bounded time.
	StateLingering
	// StateClosed: the connection is closed and its slot given back.
	StateClosed
)

var stateNames = [...]string{"reading", "judging", "running", "finishing", "lingering", "closed"}

// String returns the state's name, as logs and SIGUSR1 show it.
func (s ConnState) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "ConnState(" + strconv.Itoa(int(s)) + ")"
}

// setState records the connection's new state and tells the
// Config.ConnState hook.
func (cn *conn) setState(st ConnState) {
	cn.state.Store(int32(st))
	if hook := cn.s.cfg.ConnState; hook != nil {
		hook(cn.id, st)
	}
}

// State returns the connection's state.
func (cn *conn) State() ConnState { return ConnState(cn.state.Load()) }
