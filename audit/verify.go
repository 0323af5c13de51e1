package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ProblemKind classifies what Verify found wrong.
type ProblemKind int

// The kinds of problem, in the words the verifier prints.
const (
	// Altered: the record's content does not match its chain hash.
	Altered ProblemKind = iota + 1
	// Deleted: records are missing (seq gap, or a chain that does not link).
	Deleted
	// Reordered: the missing record is present, but later in the input.
	Reordered
	// Truncated: the input ends inside a record (no final newline).
	Truncated
	// Malformed: a line is not a sockwarden audit record.
	Malformed
)

// String returns the kind's name.
func (k ProblemKind) String() string {
	switch k {
	case Altered:
		return "altered"
	case Deleted:
		return "deleted"
	case Reordered:
		return "reordered"
	case Truncated:
		return "truncated"
	case Malformed:
		return "malformed"
	}
	return fmt.Sprintf("ProblemKind(%d)", int(k))
}

// Problem is the first thing wrong in a verified log.
type Problem struct {
	Kind ProblemKind
	// File and Line (1-based) locate the offending line.
	File string
	Line int
	// Seq is the offending record's seq, when it could be read.
	Seq uint64
	// Detail says what is wrong, e.g. "record seq 17 altered (hash mismatch)".
	Detail string
}

// String formats the problem as "file:line: detail".
func (p *Problem) String() string {
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Detail)
}

// Report is the result of verifying a log.
type Report struct {
	// Files is the number of inputs read.
	Files int
	// Records is the number of records verified before any problem.
	Records int
	// Runs is the number of server runs (chains) seen.
	Runs int
	// Anchored is true when the first record starts a chain (seq 1,
	// prev Genesis). When false, earlier records were not given (rotated
	// away, or removed) and the first record is trusted as a starting point.
	Anchored bool
	// FirstSeq and LastSeq are the seq of the first and last verified
	// records; LastHash is the chain hash of the last. Comparing LastSeq
	// and LastHash with a copy held elsewhere (the SIEM) detects records
	// removed from the end, which the chain alone cannot.
	FirstSeq, LastSeq uint64
	LastHash          string
	// Problem is nil when the log is intact.
	Problem *Problem
}

// OK reports whether no problem was found.
func (r *Report) OK() bool { return r.Problem == nil }

// MaxLineBytes is the longest line Verify accepts.
const MaxLineBytes = 16 << 20

// recentWindow is how many recent record hashes the verifier remembers to
// tell a record moved backwards from a deletion.
const recentWindow = 4096

// chainRecord is the part of a record the verifier reads.
type chainRecord struct {
	Timestamp  string  `json:"@timestamp"`
	Seq        *uint64 `json:"seq"`
	Sockwarden struct {
		Chain struct {
			Prev string `json:"prev"`
			Hash string `json:"hash"`
		} `json:"chain"`
	} `json:"sockwarden"`
}

type position struct {
	file string
	line int
	seq  uint64
	time string // @timestamp
}

func (p position) String() string { return fmt.Sprintf("%s:%d", p.file, p.line) }

// Verifier checks the hash chain of audit logs fed to it in order. The
// zero value is ready to use. Feed it the rotated files oldest first,
// then the current one; call Report at the end.
//
// A record is intact when its chain.hash is the SHA-256 of the line up
// to the hash and it links to its predecessor: seq one more and
// chain.prev equal to the predecessor's chain.hash. A record with seq 1
// and prev Genesis starts a new chain (a server restart) wherever it
// appears. Verification stops at the first problem.
type Verifier struct {
	// Syslog reads each line as a syslog collector wrote it: the record
	// is the line from its `{"@timestamp":` on, whatever header the
	// collector put before it; lines without a record (other programs'
	// messages) are skipped. A deleted record still breaks the chain.
	Syslog bool

	rep      Report
	have     bool
	last     position
	lastHash string
	recent   map[string]position
	ring     []string
	ringPos  int
	gap      *gap // a seq gap whose classification waits for the rest of the input
	done     bool
	lineBuf  []byte
}

type gap struct {
	p        Problem // as Deleted
	wantPrev string  // hash of the record before the gap
}

// Add reads one input. name is used in problem locations. It returns
// only I/O errors; what is wrong with the content is in Report.
func (v *Verifier) Add(name string, r io.Reader) error {
	v.rep.Files++
	br := bufio.NewReaderSize(r, 64<<10)
	for line := 1; ; line++ {
		data, complete, tooLong, err := v.readLine(br)
		if err != nil && err != io.EOF {
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
		if len(data) == 0 && !complete && !tooLong {
			return nil // end of input
		}
		switch {
		case v.done || v.gap != nil && !complete:
		case v.gap != nil:
			v.lookahead(name, line, data)
		case tooLong:
			v.fail(Malformed, name, line, 0, fmt.Sprintf("malformed record: line longer than %d bytes", MaxLineBytes))
		case !complete:
			v.fail(Truncated, name, line, 0, "truncated record (no newline at end of file)")
		case v.Syslog:
			if i := bytes.Index(data, syslogRecordStart); i >= 0 {
				v.check(name, line, data[i:])
			}
		default:
			v.check(name, line, data)
		}
		if !complete {
			return nil
		}
	}
}

// readLine returns the next line without its newline. complete is false
// at the end of input for a line that has no newline.
func (v *Verifier) readLine(br *bufio.Reader) (line []byte, complete, tooLong bool, err error) {
	buf := v.lineBuf[:0]
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > MaxLineBytes+1 {
			tooLong = true
		} else {
			buf = append(buf, chunk...)
		}
		switch {
		case err == nil:
			v.lineBuf = buf
			if tooLong {
				return nil, true, true, nil
			}
			return buf[:len(buf)-1], true, false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			v.lineBuf = buf
			if tooLong {
				return nil, false, true, err
			}
			return buf, false, false, err
		}
	}
}

func (v *Verifier) fail(kind ProblemKind, file string, line int, seq uint64, detail string) {
	v.rep.Problem = &Problem{Kind: kind, File: file, Line: line, Seq: seq, Detail: detail}
	v.done = true
}

// parse reads seq and chain fields and checks the hash. It returns a
// non-empty problem detail when the line is malformed or altered.
func parse(data []byte) (rec chainRecord, kind ProblemKind, detail string) {
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, Malformed, "malformed record: " + err.Error()
	}
	if rec.Seq == nil || *rec.Seq == 0 {
		return rec, Malformed, "malformed record: no seq"
	}
	c := rec.Sockwarden.Chain
	if !isHash(c.Prev) || !isHash(c.Hash) {
		return rec, Malformed, fmt.Sprintf("malformed record seq %d: no chain hashes", *rec.Seq)
	}
	body, ok := bytes.CutSuffix(data, []byte(`"hash":"`+c.Hash+`"}}}`))
	if !ok || !bytes.HasSuffix(body, []byte(`"chain":{"prev":"`+c.Prev+`",`)) {
		return rec, Malformed, fmt.Sprintf("malformed record seq %d: chain is not the last member", *rec.Seq)
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != c.Hash {
		return rec, Altered, fmt.Sprintf("record seq %d altered (hash mismatch)", *rec.Seq)
	}
	return rec, 0, ""
}

func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (v *Verifier) check(file string, line int, data []byte) {
	rec, kind, detail := parse(data)
	if kind != 0 {
		var seq uint64
		if rec.Seq != nil {
			seq = *rec.Seq
		}
		v.fail(kind, file, line, seq, detail)
		return
	}
	seq, prev := *rec.Seq, rec.Sockwarden.Chain.Prev
	here := position{file, line, seq, rec.Timestamp}
	start := seq == 1 && prev == Genesis
	switch {
	case !v.have:
		v.rep.Anchored = start
		v.rep.FirstSeq = seq
		v.rep.Runs = 1
	case start && rec.Timestamp < v.last.time:
		// A chain start has no link to check; its time is what tells a
		// restart from a later file or run put in front of an older one.
		// (Timestamps have a fixed width, so they compare as strings.)
		v.fail(Reordered, file, line, seq, fmt.Sprintf(
			"chain start (seq 1, %s) is older than the record before it (seq %d at %s, %s): files or runs out of order",
			rec.Timestamp, v.last.seq, v.last, v.last.time))
		return
	case start:
		v.rep.Runs++
	case seq == v.last.seq+1 && prev == v.lastHash:
		// the common case
	case seq > v.last.seq+1:
		n := seq - v.last.seq - 1
		s := "s"
		if n == 1 {
			s = ""
		}
		v.gap = &gap{
			p: Problem{Kind: Deleted, File: file, Line: line, Seq: seq,
				Detail: fmt.Sprintf("seq gap %d -> %d: %d record%s deleted", v.last.seq, seq, n, s)},
			wantPrev: v.lastHash,
		}
		return
	case seq <= v.last.seq:
		if p, ok := v.recent[prev]; ok {
			v.fail(Reordered, file, line, seq, fmt.Sprintf(
				"record seq %d out of order (it belongs after seq %d at %s; moved or duplicated): reordered",
				seq, p.seq, p))
		} else {
			v.fail(Deleted, file, line, seq, fmt.Sprintf(
				"seq %d -> %d without a chain start (seq 1): records deleted", v.last.seq, seq))
		}
		return
	default: // seq follows, but the chain does not
		v.fail(Deleted, file, line, seq, fmt.Sprintf(
			"record seq %d does not link to seq %d (prev hash mismatch): records deleted or replaced",
			seq, v.last.seq))
		return
	}
	v.have = true
	v.last = here
	v.lastHash = rec.Sockwarden.Chain.Hash
	v.remember(v.lastHash, here)
	v.rep.Records++
	v.rep.LastSeq = seq
	v.rep.LastHash = v.lastHash
}

func (v *Verifier) remember(hash string, p position) {
	if v.recent == nil {
		v.recent = make(map[string]position, recentWindow)
		v.ring = make([]string, recentWindow)
	}
	if old := v.ring[v.ringPos]; old != "" {
		delete(v.recent, old)
	}
	v.ring[v.ringPos] = hash
	v.ringPos = (v.ringPos + 1) % recentWindow
	v.recent[hash] = p
}

// lookahead looks for the record missing at a gap: if it comes later,
// the records were reordered rather than deleted.
func (v *Verifier) lookahead(file string, line int, data []byte) {
	var rec chainRecord
	if json.Unmarshal(data, &rec) != nil || rec.Sockwarden.Chain.Prev != v.gap.wantPrev {
		return
	}
	p := v.gap.p
	p.Kind = Reordered
	var seq uint64
	if rec.Seq != nil {
		seq = *rec.Seq
	}
	p.Detail = fmt.Sprintf("record seq %d out of order (expected seq %d, found at %s:%d): reordered",
		p.Seq, seq, file, line)
	v.rep.Problem = &p
	v.gap = nil
	v.done = true
}

// Report returns the result for everything added so far.
func (v *Verifier) Report() Report {
	r := v.rep
	if v.gap != nil {
		p := v.gap.p
		r.Problem = &p
	}
	return r
}

// syslogRecordStart is how a record starts, within a syslog line.
var syslogRecordStart = []byte(`{"@timestamp":`)

// VerifyFiles verifies the files at paths, in the order given (oldest
// rotated file first). Files ending in ".gz" are decompressed. The error
// is for I/O problems only; tampering is reported in Report.Problem.
func VerifyFiles(paths ...string) (Report, error) {
	return verifyFiles(&Verifier{}, paths)
}

// VerifySyslogFiles is VerifyFiles for the files a syslog collector
// wrote (see Verifier.Syslog).
func VerifySyslogFiles(paths ...string) (Report, error) {
	return verifyFiles(&Verifier{Syslog: true}, paths)
}

func verifyFiles(v *Verifier, paths []string) (Report, error) {
	for _, p := range paths {
		if err := verifyFile(v, p); err != nil {
			return v.Report(), err
		}
	}
	return v.Report(), nil
}

func verifyFile(v *Verifier, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	return v.Add(path, r)
}
