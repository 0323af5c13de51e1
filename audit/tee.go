package audit

import (
	"errors"
	"fmt"
)

// TeeSink writes every record to several sinks: the local source of
// truth, and copies (a syslog daemon that forwards them to a SIEM, say).
// Each has its own failure policy: a Required sink that fails fails the
// write (the Logger then refuses requests, as with one sink); a sink
// that is not Required is best effort, and its failure is only reported
// to OnError, so that a collector that is away does not stop the host.
type TeeSink struct {
	sinks []TeeMember
	// OnError, when set, hears of each failed write of a best-effort
	// member (name, error).
	OnError func(name string, err error)
}

// TeeMember is one sink of a TeeSink.
type TeeMember struct {
	Name     string // for errors: "file /var/log/sockwarden/audit.jsonl"
	Sink     Sink
	Required bool
}

// NewTeeSink returns a sink writing to members, in order.
func NewTeeSink(members ...TeeMember) *TeeSink {
	return &TeeSink{sinks: members}
}

// Write writes record to every member; the error joins those of the
// required members.
func (t *TeeSink) Write(record []byte) error {
	var errs []error
	for _, m := range t.sinks {
		if err := m.Sink.Write(record); err != nil {
			if m.Required {
				errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
			} else if t.OnError != nil {
				t.OnError(m.Name, err)
			}
		}
	}
	return errors.Join(errs...)
}

// each calls f on every member and joins the errors of required ones.
func (t *TeeSink) each(f func(Sink) error) error {
	var errs []error
	for _, m := range t.sinks {
		if err := f(m.Sink); err != nil && m.Required {
			errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Reopen reopens every member.
func (t *TeeSink) Reopen() error { return t.each(Sink.Reopen) }

// Sync syncs every member.
func (t *TeeSink) Sync() error { return t.each(Sink.Sync) }

// Close closes every member.
func (t *TeeSink) Close() error { return t.each(Sink.Close) }

// Probe probes the members that can be probed (see Prober); a
// best-effort member's probe may reconnect it, and its failure does not
// count.
func (t *TeeSink) Probe() error {
	return t.each(func(s Sink) error {
		if p, ok := s.(Prober); ok {
			return p.Probe()
		}
		return nil
	})
}
