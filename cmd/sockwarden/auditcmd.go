package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/sockwarden/sockwarden/audit"
)

// Exit statuses of `sockwarden audit verify`.
const (
	auditVerifyOK       = 0 // the chain is intact
	auditVerifyTampered = 1 // a record is deleted, altered, reordered, truncated or malformed
	auditVerifyError    = 2 // bad usage, or a file could not be read
)

// auditVerifyUsage is the usage text of `sockwarden audit verify`.
const auditVerifyUsage = `usage: sockwarden audit verify [-json] [-syslog] FILE...

Checks the hash chain of sockwarden audit logs. Give rotated files oldest
first and the current file last (audit.log.2.gz audit.log.1 audit.log);
files ending in .gz are decompressed. With -syslog, the files are what a
syslog collector (rsyslog, syslog-ng) wrote of the records sockwarden's
syslog sink sent: the chain is checked where the trail arrives.

Prints "ok: N records in M files", or the first problem found as
"FILE:LINE: what is wrong". Exit status: 0 intact, 1 a record was
deleted, altered, reordered, truncated or is malformed, 2 usage or I/O
error.

The chain cannot show records removed from the end of the newest file:
compare the last seq and hash (-json) with the copy your SIEM holds.

Flags:
`

// auditVerifyJSON is the -json output.
type auditVerifyJSON struct {
	OK       bool              `json:"ok"`
	Files    int               `json:"files"`
	Records  int               `json:"records"`
	Runs     int               `json:"runs"`
	Anchored bool              `json:"anchored"`
	FirstSeq uint64            `json:"first_seq"`
	LastSeq  uint64            `json:"last_seq"`
	LastHash string            `json:"last_hash,omitempty"`
	Problem  *auditProblemJSON `json:"problem,omitempty"`
	Error    string            `json:"error,omitempty"`
}

type auditProblemJSON struct {
	Kind    string `json:"kind"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Seq     uint64 `json:"seq,omitempty"`
	Detail  string `json:"detail"`
	Message string `json:"message"`
}

// runAuditVerify implements `sockwarden audit verify [-json] FILE...`.
// args are the arguments after "verify". It returns the exit status.
func runAuditVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sockwarden audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as one JSON object on stdout")
	syslog := fs.Bool("syslog", false, "the files are a syslog collector's: each record is the line from its {\"@timestamp\": on, after\nwhatever header the collector wrote; lines without a record are skipped")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), auditVerifyUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return auditVerifyOK
		}
		return auditVerifyError
	}
	files := fs.Args()
	if len(files) == 0 {
		fmt.Fprintln(stderr, "sockwarden audit verify: no FILE given")
		fs.Usage()
		return auditVerifyError
	}

	verify := audit.VerifyFiles
	if *syslog {
		verify = audit.VerifySyslogFiles
	}
	rep, err := verify(files...)
	status := auditVerifyOK
	switch {
	case rep.Problem != nil:
		// Found before any I/O error: it is the first problem.
		status = auditVerifyTampered
	case err != nil:
		status = auditVerifyError
	}

	if *asJSON {
		out := auditVerifyJSON{
			OK: status == auditVerifyOK, Files: rep.Files, Records: rep.Records, Runs: rep.Runs,
			Anchored: rep.Anchored, FirstSeq: rep.FirstSeq, LastSeq: rep.LastSeq, LastHash: rep.LastHash,
		}
		if p := rep.Problem; p != nil {
			out.Problem = &auditProblemJSON{Kind: p.Kind.String(), File: p.File, Line: p.Line, Seq: p.Seq,
				Detail: p.Detail, Message: p.String()}
		}
		if err != nil {
			out.Error = err.Error()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(out); werr != nil {
			fmt.Fprintf(stderr, "sockwarden audit verify: %v\n", werr)
			return auditVerifyError
		}
		if err != nil {
			fmt.Fprintf(stderr, "sockwarden audit verify: %v\n", err)
		}
		return status
	}

	if rep.Problem != nil {
		fmt.Fprintln(stdout, rep.Problem)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden audit verify: %v\n", err)
	}
	if status != auditVerifyOK {
		return status
	}
	fmt.Fprintf(stdout, "ok: %d %s in %d %s\n", rep.Records, plural(rep.Records, "record"), rep.Files, plural(rep.Files, "file"))
	if rep.Records > 0 && !rep.Anchored {
		fmt.Fprintf(stderr, "note: the first record is seq %d, not a server start: earlier records were not given, so they were not checked\n", rep.FirstSeq)
	}
	return status
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
