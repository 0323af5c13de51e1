package kaudit

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strconv"
)

// Field is one key=value pair of a record.
type Field struct {
	Key, Value string
	// Quoted is true when the value was in double quotes. The kernel
	// writes an untrusted string (a path, a command name) in quotes when
	// it is plain, and as hexadecimal without quotes when it has spaces,
	// quotes, control characters or non-ASCII bytes; see [Field.Text].
	Quoted bool
}

// Text returns the value of an untrusted-string field (path, name, exe,
// comm) as the string it stands for: quoted values as they are,
// hexadecimal ones decoded. "(null)" and "?" stay as they are.
func (f Field) Text() string {
	if f.Quoted || len(f.Value)%2 != 0 {
		return f.Value
	}
	b, err := hex.DecodeString(f.Value)
	if err != nil {
		return f.Value
	}
	return string(b)
}

// Parsed is a record split into its header and fields.
type Parsed struct {
	// Time is the record's time as the kernel wrote it
	// ("SECONDS.MILLIS"), Serial its event serial.
	Time   string
	Serial uint64
	Fields []Field
}

// Get returns the field named key, and whether there is one.
func (p *Parsed) Get(key string) (Field, bool) {
	for _, f := range p.Fields {
		if f.Key == key {
			return f, true
		}
	}
	return Field{}, false
}

// Value returns the raw value of the field named key, "" without one.
func (p *Parsed) Value(key string) string {
	f, _ := p.Get(key)
	return f.Value
}

// Uint returns the field named key as an unsigned number in base (10
// or 16), and whether it is one.
func (p *Parsed) Uint(key string, base int) (uint64, bool) {
	f, ok := p.Get(key)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(f.Value, base, 64)
	return v, err == nil
}

var errHeader = errors.New("kaudit: record without an audit(TIME:SERIAL) header")

// Parse splits a record's text ("audit(TIME:SERIAL): key=value ...").
// A value runs to the next space, or in double quotes to the closing
// quote (the kernel never quotes a string that has a quote or a space).
// Text that is not key=value is skipped.
func Parse(data []byte) (Parsed, error) {
	var p Parsed
	rest, ok := bytes.CutPrefix(data, []byte("audit("))
	if !ok {
		return p, errHeader
	}
	end := bytes.Index(rest, []byte("): "))
	if end < 0 {
		if !bytes.HasSuffix(rest, []byte(")")) && !bytes.HasSuffix(rest, []byte("):")) {
			return p, errHeader
		}
		end = bytes.LastIndexByte(rest, ')')
	}
	hdr := rest[:end]
	colon := bytes.LastIndexByte(hdr, ':')
	if colon < 0 {
		return p, errHeader
	}
	serial, err := strconv.ParseUint(string(hdr[colon+1:]), 10, 64)
	if err != nil {
		return p, errHeader
	}
	p.Time, p.Serial = string(hdr[:colon]), serial
	if end+3 > len(rest) {
		return p, nil
	}
	s := rest[end+3:]
	for len(s) > 0 {
		for len(s) > 0 && s[0] == ' ' {
			s = s[1:]
		}
		eq := bytes.IndexByte(s, '=')
		sp := bytes.IndexByte(s, ' ')
		if eq < 0 || (sp >= 0 && sp < eq) {
			// A word without a value: skip it.
			if sp < 0 {
				break
			}
			s = s[sp:]
			continue
		}
		f := Field{Key: string(s[:eq])}
		s = s[eq+1:]
		if len(s) > 0 && s[0] == '"' {
			if q := bytes.IndexByte(s[1:], '"'); q >= 0 {
				f.Value, f.Quoted = string(s[1:1+q]), true
				s = s[q+2:]
				p.Fields = append(p.Fields, f)
				continue
			}
		}
		if sp = bytes.IndexByte(s, ' '); sp >= 0 {
			f.Value, s = string(s[:sp]), s[sp:]
		} else {
			f.Value, s = string(s), nil
		}
		p.Fields = append(p.Fields, f)
	}
	return p, nil
}
