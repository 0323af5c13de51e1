package audit

import (
	"path"
	"strconv"
	"strings"
)

// Masking.
//
// Secrets travel in argvs (--password=..., an Authorization header given
// to curl), and a denied request is exactly where they leak into a trail.
// Before an exec.decision record (or the operator log) shows an argv, Mask
// replaces the arguments the policy names by position, and the values of
// the arguments whose key matches a pattern, with "***". The record lists
// what was masked as JSON pointers (sockwarden.argv.masked:
// "/process/args/2"), as OPA's decision logs list theirs, and its
// sha256 is of the argv as recorded, so that a short secret cannot be
// found again by hashing guesses.
//
// A pattern is matched, case-insensitively and with path.Match's syntax,
// against an argument's key: the argument up to and including its first
// "=" or ":" ("--password=", "Authorization:"). What follows the key is
// masked; an argument without "=" or ":" has no key and is masked only
// by position.

// DefaultMaskPatterns returns the patterns masked by default, whatever
// the policy says ([audit] mask_patterns).
func DefaultMaskPatterns() []string {
	return []string{
		"*password*=", "*passwd*=", "*secret*=", "*token*=", "*api?key*=", "*apikey*=",
		"authorization:", "proxy-authorization:", "cookie:", "x-api-key:",
	}
}

// maskedValue replaces what is masked.
const maskedValue = "***"

// Mask returns argv with the arguments at positions replaced and the
// values of the arguments whose key matches one of patterns masked, and
// the JSON pointers of the masked arguments. argv itself is not changed;
// when nothing is masked, it is returned as it is.
func Mask(argv []string, positions []int, patterns []string) ([]string, []string) {
	var out []string
	var pointers []string
	set := func(i int, v string) {
		if out == nil {
			out = append([]string(nil), argv...)
		}
		out[i] = v
		pointers = append(pointers, "/process/args/"+strconv.Itoa(i))
	}
	for i, a := range argv {
		if containsInt(positions, i) {
			set(i, maskedValue)
			continue
		}
		k := strings.IndexAny(a, "=:")
		if k < 0 {
			continue
		}
		key := strings.ToLower(a[:k+1])
		for _, p := range patterns {
			if ok, _ := path.Match(strings.ToLower(p), key); ok {
				set(i, a[:k+1]+maskedValue)
				break
			}
		}
	}
	if out == nil {
		return argv, nil
	}
	return out, pointers
}

// CheckMaskPatterns reports the first malformed pattern.
func CheckMaskPatterns(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return &maskPatternError{p}
		}
	}
	return nil
}

type maskPatternError struct{ pattern string }

func (e *maskPatternError) Error() string {
	return "malformed mask pattern " + strconv.Quote(e.pattern)
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
