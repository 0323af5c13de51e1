package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Bounded records.
//
// A caller controls the argv of its request, and a denied request is
// recorded like any other: without a bound, one caller could write a
// megabyte per request into the trail. Every exec.decision record fits in
// [Options].MaxRecordBytes ([DefaultMaxRecordBytes]): when the argv does
// not fit, each argument is cut to a common length (at a UTF-8 boundary,
// 32 bytes at least), and arguments past what fits are left out. The record then says so in
// sockwarden.argv: cut (the index and original length of each cut
// argument, at most [maxCutListed]), omitted (how many arguments at the
// end are not shown), and always sha256, the SHA-256 of the whole argv
// (see [ArgvSHA256]), with which an investigator matches an exact
// command. The policy's message and reasons, which may quote the argv,
// and the executable path are cut too when the record still does not
// fit, and named in sockwarden.argv.fields_cut.
//
// Invalid UTF-8 in an argument is written as U+FFFD, one per byte, as
// encoding/json does: two argvs that differ only there read the same in
// process.args, and their sha256 tells them apart.

// DefaultMaxRecordBytes is the default bound of an audit record.
const DefaultMaxRecordBytes = 16 << 10

// MinMaxRecordBytes is the smallest bound a Logger accepts (a record with
// nothing cut needs about a kilobyte).
const MinMaxRecordBytes = 4 << 10

// chainReserve is room for the chain object and the closing braces that
// Logger.finish appends.
const chainReserve = 200

// maxCutListed bounds the list of cut arguments.
const maxCutListed = 64

// ArgvSHA256 returns the hexadecimal SHA-256 of argv as the client sent
// it: each argument as a netstring ("LEN:BYTES,"), one after the other.
// It is sockwarden.argv.sha256 in exec.decision records and argv_sha256
// in the operator log.
func ArgvSHA256(argv []string) string {
	h := sha256.New()
	var n []byte
	for _, a := range argv {
		n = strconv.AppendInt(n[:0], int64(len(a)), 10)
		n = append(n, ':')
		h.Write(n)
		h.Write([]byte(a))
		h.Write([]byte{','})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ArgvPreview is what the operator log shows of argv: its first bytes (at
// most 120, then "…") and the argument count, never the whole argv.
func ArgvPreview(argv []string) string {
	const max = 120
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(a)
		if b.Len() > max {
			break
		}
	}
	s := b.String()
	if len(s) > max {
		s = cutUTF8(s, max) + "…"
	}
	return s + " (" + strconv.Itoa(len(argv)) + " args)"
}

// cutUTF8 returns the first n bytes of s at most, not splitting a UTF-8
// sequence.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// argvCut is what was left out of a record's argv.
type argvCut struct {
	shown     []string
	cut       [][2]int // index, original length
	omitted   int
	fieldsCut []string
}

// encodedLen is the length of s as a JSON string.
func encodedLen(s string) int { return len(appendString(nil, s)) }

// fitArgv returns the argv to show in at most budget bytes of JSON array.
func fitArgv(argv []string, budget int) argvCut {
	size := func(c int, k int) int { // arguments cut to c bytes, the first k of them
		n := 2 // []
		for i := 0; i < k; i++ {
			if i > 0 {
				n++
			}
			n += encodedLen(cutUTF8(argv[i], c))
			if n > budget {
				return n
			}
		}
		return n
	}
	longest := 0
	for _, a := range argv {
		longest = max(longest, len(a))
	}
	// Every argument shown keeps at least its first minShown bytes: with
	// too many arguments for that, the first k are shown.
	const minShown = 32
	k := largestFitting(len(argv), func(n int) bool { return size(minShown, n) <= budget })
	// The largest common cut that fits.
	c := largestFitting(min(longest, budget), func(n int) bool { return size(n, k) <= budget })
	out := argvCut{shown: make([]string, k), omitted: len(argv) - k}
	for i := 0; i < k; i++ {
		out.shown[i] = cutUTF8(argv[i], c)
		if len(out.shown[i]) < len(argv[i]) {
			out.cut = append(out.cut, [2]int{i, len(argv[i])})
		}
	}
	return out
}

// largestFitting returns the largest n in [0, hi] for which fits holds,
// fits being true up to some n and false after it (0 if it never holds).
func largestFitting(hi int, fits func(int) bool) int {
	return max(0, sort.Search(hi+1, func(n int) bool { return !fits(n) })-1)
}

// appendArgvInfo appends the sockwarden.argv object (with a trailing
// comma).
func appendArgvInfo(b []byte, sum string, masked []string, c *argvCut) []byte {
	b = append(b, `"argv":{"sha256":"`...)
	b = append(b, sum...)
	b = append(b, '"')
	if len(masked) > 0 {
		b = append(b, `,"masked":`...)
		b = appendStrings(b, masked)
	}
	if c != nil {
		if len(c.cut) > 0 {
			b = append(b, `,"cut":[`...)
			for i, x := range c.cut {
				if i == maxCutListed {
					break
				}
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, `{"index":`...)
				b = strconv.AppendInt(b, int64(x[0]), 10)
				b = append(b, `,"length":`...)
				b = strconv.AppendInt(b, int64(x[1]), 10)
				b = append(b, '}')
			}
			b = append(b, ']')
			if len(c.cut) > maxCutListed {
				b = append(b, `,"cut_not_listed":`...)
				b = strconv.AppendInt(b, int64(len(c.cut)-maxCutListed), 10)
			}
		}
		if c.omitted > 0 {
			b = append(b, `,"omitted":`...)
			b = strconv.AppendInt(b, int64(c.omitted), 10)
		}
		if len(c.fieldsCut) > 0 {
			b = append(b, `,"fields_cut":`...)
			b = appendStrings(b, c.fieldsCut)
		}
	}
	return append(b, `},`...)
}

// boundDecision returns d as it fits in max bytes with a head of
// headLen bytes: unchanged when it does, else with its argv (and, if
// still needed, message, reasons and executable) cut, and what was cut.
func boundDecision(d *Decision, sum string, headLen, max int) (*Decision, *argvCut) {
	argc := len(d.Argv)
	full := headLen + len(appendDecision(nil, d, argc, sum, nil)) + chainReserve
	if full <= max {
		return d, nil
	}
	cd := *d
	c := &argvCut{}
	// Room for the cut list and the counts.
	const infoReserve = 64*32 + 160
	noArgs := cd
	noArgs.Argv = nil
	base := headLen + len(appendDecision(nil, &noArgs, argc, sum, nil)) + chainReserve + infoReserve
	if base > max/2 {
		// The policy's words (or the executable path) are what is big:
		// a kilobyte each at most.
		if len(cd.Message) > 1024 {
			cd.Message = cutUTF8(cd.Message, 1024) + "…"
			c.fieldsCut = append(c.fieldsCut, "message")
		}
		if len(cd.Reasons) > 8 || sumLen(cd.Reasons) > 2048 {
			rs := cd.Reasons[:min(len(cd.Reasons), 8)]
			cd.Reasons = make([]string, len(rs))
			for i, r := range rs {
				cd.Reasons[i] = cutUTF8(r, 256)
			}
			c.fieldsCut = append(c.fieldsCut, "reasons")
		}
		if len(cd.Exe) > 1024 {
			cd.Exe = cutUTF8(cd.Exe, 1024) + "…"
			c.fieldsCut = append(c.fieldsCut, "executable")
		}
		if len(cd.Error) > 1024 {
			cd.Error = cutUTF8(cd.Error, 1024) + "…"
			c.fieldsCut = append(c.fieldsCut, "error")
		}
		noArgs = cd
		noArgs.Argv = nil
		base = headLen + len(appendDecision(nil, &noArgs, argc, sum, nil)) + chainReserve + infoReserve
	}
	fit := fitArgv(d.Argv, max-base)
	c.shown, c.cut, c.omitted = fit.shown, fit.cut, fit.omitted
	cd.Argv = c.shown
	return &cd, c
}

func sumLen(ss []string) int {
	n := 0
	for _, s := range ss {
		n += len(s)
	}
	return n
}
