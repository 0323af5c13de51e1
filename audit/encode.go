package audit

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/sockwarden/sockwarden/sandbox"
)

// ECSVersion is the ECS version the records follow (ecs.version).
const ECSVersion = "8.17.0"

// timeLayout is RFC 3339 with a fixed nine-digit fraction, so that
// timestamps sort as strings.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// categorisation of each action: the event.category and event.type arrays.
var categories = map[string]string{
	ActionDecision:      `"category":["process"],"type":["access"]`,
	ActionStart:         `"category":["process"],"type":["start"]`,
	ActionExit:          `"category":["process"],"type":["end"]`,
	ActionKill:          `"category":["process"],"type":["info"]`,
	ActionProtocolError: `"category":["network"],"type":["error"]`,
	ActionQuota:         `"category":["network"],"type":["denied"]`,
	ActionDenials:       `"category":["process"],"type":["denied"]`,
	ActionPolicyReload:  `"category":["configuration"],"type":["change"]`,
	ActionServerStart:   `"category":["process"],"type":["start"]`,
	ActionServerStop:    `"category":["process"],"type":["end"]`,
}

// head is what every record starts with.
type head struct {
	action    string
	success   bool
	reason    string // event.reason, optional
	duration  int64  // event.duration in ns
	hasDur    bool
	requestID string
}

func (l *Logger) appendHead(b []byte, h *head, now time.Time, seq uint64) []byte {
	b = append(b, `{"@timestamp":"`...)
	b = now.UTC().AppendFormat(b, timeLayout)
	b = append(b, `","ecs":{"version":"`+ECSVersion+`"},"event":{"kind":"event",`...)
	b = append(b, categories[h.action]...)
	b = append(b, `,"action":"`...)
	b = append(b, h.action...)
	if h.success {
		b = append(b, `","outcome":"success"`...)
	} else {
		b = append(b, `","outcome":"failure"`...)
	}
	if h.reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, h.reason)
	}
	if h.hasDur {
		b = append(b, `,"duration":`...)
		b = strconv.AppendInt(b, h.duration, 10)
	}
	b = append(b, `,"dataset":"sockwarden.audit"},"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	if h.requestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendString(b, h.requestID)
	}
	b = append(b, `,"host":{"name":`...)
	b = append(b, l.hostJSON...)
	b = append(b, '}')
	return b
}

// The body encoders below append the ECS part of a record, then open the
// sockwarden object and append its members, each followed by a comma;
// Logger.commit appends the chain object and closes the record.

// appendDecision appends d, whose argv may be a cut one (see bound.go):
// argc is the original count, sum the whole argv's SHA-256 and cut what
// was left out (nil: nothing).
func appendDecision(b []byte, d *Decision, argc int, sum string, cut *argvCut) []byte {
	if d.Message != "" {
		b = append(b, `,"message":`...)
		b = appendString(b, d.Message)
	}
	b = append(b, `,"process":{`...)
	if d.Exe != "" {
		b = append(b, `"executable":`...)
		b = appendString(b, d.Exe)
		b = append(b, ',')
	}
	b = append(b, `"args":`...)
	b = appendStrings(b, d.Argv)
	b = append(b, `,"args_count":`...)
	b = strconv.AppendInt(b, int64(argc), 10)
	b = append(b, '}')
	b = appendClient(b, &d.Peer)
	b = appendError(b, d.Error)
	b = append(b, `,"sockwarden":{"decision":{"allow":`...)
	b = strconv.AppendBool(b, d.Allow)
	b = append(b, `,"reasons":`...)
	b = appendStrings(b, d.Reasons)
	b = append(b, `},"policy":{"revision":`...)
	b = appendString(b, d.Revision)
	if d.Cached {
		b = append(b, `,"cached":true`...)
	}
	b = append(b, `},`...)
	b = appendArgvInfo(b, sum, d.Masked, cut)
	b = appendPeer(b, &d.Peer)
	return b
}

func appendStart(b []byte, s *Start) []byte {
	b = append(b, `,"process":{`...)
	n := len(b)
	if s.PID != 0 {
		b = append(b, `"pid":`...)
		b = strconv.AppendInt(b, int64(s.PID), 10)
	}
	if s.PGID != 0 {
		b = comma(b, n)
		b = append(b, `"pgid":`...)
		b = strconv.AppendInt(b, int64(s.PGID), 10)
	}
	if s.Exe != "" {
		b = comma(b, n)
		b = append(b, `"executable":`...)
		b = appendString(b, s.Exe)
	}
	if s.Dir != "" {
		b = comma(b, n)
		b = append(b, `"working_directory":`...)
		b = appendString(b, s.Dir)
	}
	b = append(b, '}')
	// A dynamic uid that was never given out (the start failed) has no
	// user and group to name.
	if !s.RunAs.Dynamic || s.Error == "" {
		b = append(b, `,"user":{"id":"`...)
		b = strconv.AppendUint(b, uint64(s.RunAs.UID), 10)
		b = append(b, '"')
		if s.RunAs.User != "" {
			b = append(b, `,"name":`...)
			b = appendString(b, s.RunAs.User)
		}
		b = append(b, `},"group":{"id":"`...)
		b = strconv.AppendUint(b, uint64(s.RunAs.GID), 10)
		b = append(b, '"')
		if s.RunAs.Group != "" {
			b = append(b, `,"name":`...)
			b = appendString(b, s.RunAs.Group)
		}
		b = append(b, '}')
	}
	b = appendError(b, s.Error)
	b = append(b, `,"sockwarden":{"run_as":{"groups":[`...)
	for i, g := range s.RunAs.Groups {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":"`...)
		b = strconv.AppendUint(b, uint64(g.ID), 10)
		b = append(b, '"')
		if g.Name != "" {
			b = append(b, `,"name":`...)
			b = appendString(b, g.Name)
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	if s.RunAs.Dynamic {
		b = append(b, `,"dynamic":true`...)
	}
	b = append(b, `},"rlimits":{`...)
	if len(s.Rlimits) > 0 {
		keys := make([]string, 0, len(s.Rlimits))
		for k := range s.Rlimits {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendRlimit(b, s.Rlimits[k])
		}
	}
	b = append(b, `},`...)
	if ll := s.Landlock; ll != nil {
		b = append(b, `"landlock":{"abi":`...)
		b = strconv.AppendInt(b, int64(ll.ABI), 10)
		b = append(b, `,"ro":`...)
		b = appendStrings(b, ll.RO)
		b = append(b, `,"rw":`...)
		b = appendStrings(b, ll.RW)
		if len(ll.Dropped) > 0 {
			b = append(b, `,"dropped":`...)
			b = appendStrings(b, ll.Dropped)
		}
		b = append(b, `,"tcp_restricted":`...)
		b = strconv.AppendBool(b, ll.TCPRestricted)
		b = append(b, `,"connect_tcp":`...)
		b = appendPorts(b, ll.ConnectTCP)
		b = append(b, `,"bind_tcp":`...)
		b = appendPorts(b, ll.BindTCP)
		b = append(b, `,"best_effort":`...)
		b = strconv.AppendBool(b, ll.BestEffort)
		b = append(b, `,"downgraded":`...)
		b = strconv.AppendBool(b, ll.Downgraded)
		b = append(b, `},`...)
	}
	if s.TmpDir != "" {
		b = append(b, `"tmpdir":`...)
		b = appendString(b, s.TmpDir)
		b = append(b, ',')
	}
	if ns := s.Namespaces; ns != nil {
		b = append(b, `"namespaces":{"ipc":`...)
		b = appendString(b, ns.IPC)
		b = append(b, `,"network":`...)
		b = appendString(b, ns.Network)
		b = append(b, `},`...)
	}
	if sc := s.Seccomp; sc != nil {
		b = append(b, `"seccomp":{"profile":`...)
		b = appendString(b, sc.Profile)
		b = append(b, `,"allow":`...)
		b = appendStrings(b, sc.Allow)
		b = append(b, `,"deny":`...)
		b = appendStrings(b, sc.Deny)
		b = append(b, `,"network":`...)
		b = strconv.AppendBool(b, sc.Network)
		b = append(b, `,"udp":`...)
		b = strconv.AppendBool(b, sc.UDP)
		b = append(b, `},`...)
	}
	return b
}

func appendExit(b []byte, e *Exit, end time.Time, limit int) []byte {
	b = append(b, `,"process":{"pid":`...)
	b = strconv.AppendInt(b, int64(e.PID), 10)
	if e.Signal == "" {
		b = append(b, `,"exit_code":`...)
		b = strconv.AppendInt(b, int64(e.ExitCode), 10)
	}
	b = append(b, `,"end":"`...)
	b = end.UTC().AppendFormat(b, timeLayout)
	b = append(b, `"},"sockwarden":{"exit":{`...)
	if e.Signal != "" {
		b = append(b, `"signal":`...)
		b = appendString(b, e.Signal)
		b = append(b, ',')
	}
	b = append(b, `"bytes":{"stdin":`...)
	b = strconv.AppendInt(b, e.StdinBytes, 10)
	b = append(b, `,"stdout":`...)
	b = strconv.AppendInt(b, e.StdoutBytes, 10)
	b = append(b, `,"stderr":`...)
	b = strconv.AppendInt(b, e.StderrBytes, 10)
	b = append(b, `},"truncated":{"stdin":`...)
	b = strconv.AppendBool(b, e.StdinTruncated)
	b = append(b, `,"stdout":`...)
	b = strconv.AppendBool(b, e.StdoutTruncated)
	b = append(b, `,"stderr":`...)
	b = strconv.AppendBool(b, e.StderrTruncated)
	b = append(b, `},"cpu":{"user_ns":`...)
	b = strconv.AppendInt(b, int64(e.UserCPU), 10)
	b = append(b, `,"system_ns":`...)
	b = strconv.AppendInt(b, int64(e.SystemCPU), 10)
	b = append(b, `},"max_rss_bytes":`...)
	b = strconv.AppendInt(b, e.MaxRSS, 10)
	if cg := e.Cgroup; cg != nil {
		b = append(b, `,"cgroup":{"path":`...)
		b = appendString(b, cg.Path)
		b = append(b, `,"killed":`...)
		b = strconv.AppendInt(b, int64(cg.Killed), 10)
		b = append(b, `,"oom_kills":`...)
		b = strconv.AppendInt(b, cg.OOMKills, 10)
		if cg.MemoryPeak > 0 {
			b = append(b, `,"memory_peak_bytes":`...)
			b = strconv.AppendInt(b, cg.MemoryPeak, 10)
		}
		if cg.PidsPeak > 0 {
			b = append(b, `,"pids_peak":`...)
			b = strconv.AppendInt(b, cg.PidsPeak, 10)
		}
		if cg.CPU > 0 {
			b = append(b, `,"cpu_ns":`...)
			b = strconv.AppendInt(b, int64(cg.CPU), 10)
		}
		if cg.Lingering {
			b = append(b, `,"lingering":true`...)
		}
		b = append(b, '}')
	}
	b = append(b, '}')
	if e.Denials != nil {
		b = appendDenials(append(b, ','), e.Denials, limit)
	}
	b = append(b, ',')
	return b
}

// appendDenials appends "denials":{...} of sockwarden. Denials that
// would take the record past limit bytes are counted as unlisted.
func appendDenials(b []byte, d *SandboxDenials, limit int) []byte {
	b = append(b, `"denials":{"landlock":[`...)
	unlisted := d.Unlisted
	for i, x := range d.Landlock {
		// Room for this entry (its target once more for escapes) and
		// the rest of the object.
		if len(b)+len(x.Access)+2*len(x.Target)+60+200 > limit {
			for _, y := range d.Landlock[i:] {
				unlisted += y.Count
			}
			break
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"access":`...)
		b = appendString(b, x.Access)
		b = append(b, `,"target":`...)
		b = appendString(b, x.Target)
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, int64(x.Count), 10)
		b = append(b, '}')
	}
	b = append(b, `],"received":`...)
	b = strconv.AppendInt(b, int64(d.Received), 10)
	if unlisted > 0 {
		b = append(b, `,"unlisted":`...)
		b = strconv.AppendInt(b, int64(unlisted), 10)
	}
	if d.Total >= 0 {
		b = append(b, `,"total":`...)
		b = strconv.AppendInt(b, int64(d.Total), 10)
	}
	if d.Final {
		b = append(b, `,"complete":`...)
		b = strconv.AppendBool(b, d.Complete)
	}
	return append(b, '}')
}

func appendDenialsRecord(b []byte, d *Denials, limit int) []byte {
	b = append(b, `,"process":{"pid":`...)
	b = strconv.AppendInt(b, int64(d.PID), 10)
	b = append(b, `},"sockwarden":{`...)
	b = appendDenials(b, &d.Denials, limit)
	return append(b, ',')
}

func appendKill(b []byte, k *Kill) []byte {
	b = append(b, `,"process":{"pid":`...)
	b = strconv.AppendInt(b, int64(k.PID), 10)
	if k.PGID != 0 {
		b = append(b, `,"pgid":`...)
		b = strconv.AppendInt(b, int64(k.PGID), 10)
	}
	b = append(b, '}')
	b = appendError(b, k.Error)
	b = append(b, `,"sockwarden":{"kill":{"signal":`...)
	b = appendString(b, k.Signal)
	b = append(b, `,"escalated":`...)
	b = strconv.AppendBool(b, k.Escalated)
	b = append(b, `},`...)
	return b
}

func appendQuota(b []byte, q *Quota) []byte {
	b = appendClient(b, &q.Peer)
	b = append(b, `,"sockwarden":{"quota":{"kind":`...)
	b = appendString(b, q.Kind)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, int64(q.Limit), 10)
	if q.Key != "" {
		b = append(b, `,"key":`...)
		b = appendString(b, q.Key)
	}
	if q.Rate > 0 {
		b = append(b, `,"rate":`...)
		b = strconv.AppendFloat(b, q.Rate, 'g', -1, 64)
	}
	b = append(b, `,"refused":`...)
	b = strconv.AppendInt(b, q.Refused, 10)
	b = append(b, `,"since":"`...)
	b = q.Since.UTC().AppendFormat(b, timeLayout)
	b = append(b, `"},`...)
	b = appendPeer(b, &q.Peer)
	return b
}

func appendProtocolError(b []byte, p *ProtocolError) []byte {
	b = appendClient(b, &p.Peer)
	b = append(b, `,"error":{"message":`...)
	b = appendString(b, p.Error)
	b = append(b, `},"sockwarden":{"protocol":{"bytes_read":`...)
	b = strconv.AppendInt(b, p.BytesRead, 10)
	b = append(b, `},`...)
	b = appendPeer(b, &p.Peer)
	return b
}

func appendPolicyReload(b []byte, p *PolicyReload) []byte {
	b = appendError(b, p.Error)
	b = append(b, `,"sockwarden":{"policy":{"revision":`...)
	b = appendString(b, p.Revision)
	b = append(b, `,"source":`...)
	b = appendString(b, p.Source)
	b = append(b, `},`...)
	return b
}

func appendServer(b []byte, s *ServerEvent, pid int, details []byte) []byte {
	if s.Message != "" {
		b = append(b, `,"message":`...)
		b = appendString(b, s.Message)
	}
	b = append(b, `,"process":{"pid":`...)
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, `},"service":{"name":"sockwarden"`...)
	if s.Version != "" {
		b = append(b, `,"version":`...)
		b = appendString(b, s.Version)
	}
	b = append(b, '}')
	b = appendError(b, s.Error)
	b = append(b, `,"sockwarden":{"server":{"socket":`...)
	b = appendString(b, s.Socket)
	b = append(b, `,"landlock_abi":`...)
	b = strconv.AppendInt(b, int64(s.LandlockABI), 10)
	if details != nil {
		b = append(b, `,"details":`...)
		b = append(b, details...)
	}
	b = append(b, `},`...)
	return b
}

// marshalDetails encodes a free-form details map with encoding/json.
func marshalDetails(m map[string]any) ([]byte, error) {
	if m == nil {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("audit: server event details: %w", err)
	}
	return b, nil
}

// appendClient writes the peer's identity as ECS client.user.
func appendClient(b []byte, p *Peer) []byte {
	b = append(b, `,"client":{"user":{"id":"`...)
	b = strconv.AppendUint(b, uint64(p.UID), 10)
	b = append(b, '"')
	if p.User != "" {
		b = append(b, `,"name":`...)
		b = appendString(b, p.User)
	}
	b = append(b, `,"group":{"id":"`...)
	b = strconv.AppendUint(b, uint64(p.GID), 10)
	b = append(b, '"')
	if p.Group != "" {
		b = append(b, `,"name":`...)
		b = appendString(b, p.Group)
	}
	b = append(b, `}}}`...)
	return b
}

// appendPeer writes what ECS has no field for: the peer's pid and exe.
func appendPeer(b []byte, p *Peer) []byte {
	b = append(b, `"peer":{"pid":`...)
	b = strconv.AppendInt(b, int64(p.PID), 10)
	if p.Exe != "" {
		b = append(b, `,"exe":`...)
		b = appendString(b, p.Exe)
	}
	b = append(b, `},`...)
	return b
}

func appendError(b []byte, msg string) []byte {
	if msg == "" {
		return b
	}
	b = append(b, `,"error":{"message":`...)
	b = appendString(b, msg)
	return append(b, '}')
}

// comma appends a comma unless b has grown no further than start.
func comma(b []byte, start int) []byte {
	if len(b) > start {
		b = append(b, ',')
	}
	return b
}

func appendRlimit(b []byte, v uint64) []byte {
	if v == sandbox.RlimitInfinity || v > 1<<63-1 {
		return append(b, "-1"...)
	}
	return strconv.AppendUint(b, v, 10)
}

func appendPorts(b []byte, ps []uint16) []byte {
	b = append(b, '[')
	for i, p := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(p), 10)
	}
	return append(b, ']')
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD
// (as encoding/json does), control characters and U+2028/U+2029 are
// escaped, so a record is always one line of valid UTF-8.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
