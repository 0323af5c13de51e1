// Package audit writes sockwarden's audit trail: one JSON object per line
// (JSON Lines), one record per event, hash-chained so that deleted,
// altered or reordered records are detected, and written fail-closed.
//
// The package has no dependency on the rest of sockwarden: the server
// fills plain event structs ([Decision], [Start], [Exit], [Kill],
// [ProtocolError], [PolicyReload], [ServerEvent]) and calls the
// [Logger] method of the same name.
//
// # Records
//
// Field names follow the Elastic Common Schema (ECS) where ECS has a
// field, as nested objects (never dotted keys), so that Filebeat, Vector,
// Fluent Bit or Splunk ingest them without a mapping. What ECS lacks is
// under "sockwarden". Every record has, in this order:
//
//	@timestamp      RFC 3339 UTC with 9 fractional digits (fixed width)
//	ecs.version     ECSVersion
//	event.kind      "event"
//	event.category  ["process"], ["network"] or ["configuration"]
//	event.type      ["access"|"start"|"end"|"info"|"error"|"change"]
//	event.action    exec.decision, exec.start, exec.exit, exec.kill,
//	                sandbox.denials, protocol.error, quota.exceeded,
//	                policy.reload, server.start, server.stop
//	event.outcome   "success" or "failure"
//	event.dataset   "sockwarden.audit"
//	seq             1, 2, 3... gap-free within one server run
//	request_id      correlates a request's records; absent on
//	                policy.reload and server.* records
//	host.name       Options.Host
//	sockwarden.chain.prev, sockwarden.chain.hash   (always last)
//
// Per event (see schema.json, [SchemaJSON], for the full contract):
//
//   - exec.decision: event.duration (evaluation, ns), message (the
//     policy's), process.executable, process.args, process.args_count,
//     client.user.{id,name,group.{id,name}} (the peer), error.message,
//     sockwarden.decision.{allow,reasons}, sockwarden.policy.revision,
//     sockwarden.policy.cached (true when the decision came from the
//     decision cache; absent otherwise),
//     sockwarden.peer.{pid,exe}, sockwarden.argv.{sha256,cut,omitted,
//     fields_cut} (the whole argv's hash; what was cut to keep the
//     record within Options.MaxRecordBytes). A deny has event.outcome
//     "failure".
//   - exec.start: process.{pid,pgid,executable,working_directory}, user.*
//     and group.* (the identity the child runs as),
//     sockwarden.run_as.groups (and .dynamic, true for a dynamic uid), sockwarden.rlimits (name -> limit, -1 for
//     unlimited), sockwarden.seccomp.{profile,allow,deny,network,udp},
//     sockwarden.namespaces.{ipc,network}, sockwarden.tmpdir,
//     sockwarden.landlock.{abi,ro,rw,dropped,tcp_restricted,
//     connect_tcp,bind_tcp,best_effort,downgraded}; error.message and outcome "failure" when
//     the child could not be started.
//   - exec.exit: event.duration (wall, ns), process.{pid,exit_code,end};
//     a child killed by a signal has sockwarden.exit.signal ("TERM") and
//     no process.exit_code. sockwarden.exit.{bytes,truncated}.{stdin,
//     stdout,stderr}, sockwarden.exit.cpu.{user_ns,system_ns},
//     sockwarden.exit.max_rss_bytes (wait4's figure, which for a child
//     forked with vfork is at least the server's resident size at the
//     fork: see [Exit].MaxRSS; the request's own peak is the cgroup's
//     memory_peak_bytes). Outcome "success" only for code 0.
//     A child that had a cgroup of its own adds sockwarden.exit.cgroup:
//     {path, killed, oom_kills} and, when measured, memory_peak_bytes,
//     pids_peak, cpu_ns (every process of the request), and
//     lingering: true when some were still dying. Where the server
//     reports sandbox denials, sockwarden.denials: {landlock: [{access,
//     target, count}], received, unlisted, total, complete}, those the
//     kernel had reported by the time the child ended; total and
//     complete once the kernel's final count had come.
//   - sandbox.denials: process.pid, sockwarden.denials as above, final:
//     written after an exec.exit whose list was not final when the final
//     report adds to it or is incomplete. Outcome "success" when
//     complete.
//   - exec.kill: event.reason (timeout, disconnect, output_limit,
//     stdin_limit, output_buffer, shutdown, protocol_error), process.{pid,pgid},
//     sockwarden.kill.{signal,escalated}.
//   - quota.exceeded: client.user.*, sockwarden.quota.{kind,limit,refused,
//     since} (one record per caller per interval), sockwarden.peer.
//   - protocol.error: error.message, client.user.*, sockwarden.peer,
//     sockwarden.protocol.bytes_read.
//   - policy.reload: sockwarden.policy.{revision,source}, error.message.
//   - server.start, server.stop: message, process.pid, service.{name,
//     version}, sockwarden.server.{socket,landlock_abi,details}.
//
// The peer (the client on the socket) is ECS client.user: uid and gid as
// ECS keyword strings, with names when known. ECS has no field for the
// client's pid and executable, so they are sockwarden.peer.pid and
// sockwarden.peer.exe. Only the uid, gid and pid come from the kernel.
//
// # Hash chain
//
// A record ends with
//
//	"chain":{"prev":"<P>","hash":"<H>"}}}
//
// where P is the hash of the previous record and H is the hex SHA-256 of
// the record's bytes up to and including the comma after P (everything
// before `"hash":"`). Each hash so covers all of the record, its seq and
// its predecessor's hash. The first record of a server run has seq 1 and
// prev [Genesis] (64 zeros); the server logs [Logger.ServerStart] first
// so that record is server.start. [Logger.Reopen] (log rotation) keeps the
// chain and seq: the first record of the new file links to the last one
// of the old file, and [VerifyFiles] given the files oldest first checks
// across them.
//
// [Verifier] reports the first problem: a record whose hash does not
// match its bytes (altered), a seq gap or a record that does not link to
// its predecessor (deleted), a record that is present but out of place
// (reordered: a swapped pair, a moved or duplicated line, runs or files
// in the wrong order), a line cut short at the end of a file (truncated),
// or a line that is not a record (malformed). A record with seq 1 and
// prev Genesis is accepted as a restart wherever it appears, provided
// its timestamp is not older than the record before it.
//
// The chain is keyed by nothing: it shows accidental damage and naive
// edits, but whoever can write the file can also rewrite every hash
// after an edit, and records removed from the very end of the log (or
// of a run, just before a restart) leave no trace in the chain. What
// makes the trail trustworthy is a copy out of the attacker's reach: ship
// the records to the SIEM as they are written and compare [Report]'s
// LastSeq and LastHash with the SIEM's copy.
//
// # Failure semantics
//
// Each Logger method returns an error if the record was not written, and
// the Logger becomes unhealthy ([Logger.Healthy] returns that
// [*WriteError]) until a write succeeds again or [Logger.Probe] finds the
// sink usable. The server refuses new requests while a record cannot be
// written, unless configured to continue.
//
// A record that fails is not written at all and consumes nothing: seq
// and the chain stay at the last record that was written, and the next
// record takes the same seq and links to the same predecessor. So the
// log stays gap-free and verifiable across an outage; the failed event
// itself is missing from it, and its caller knows (the method returned
// the error), and may log it again once the Logger is healthy.
//
// A partial write must not corrupt the next record. [FileSink] truncates
// the file back to its size before the failed write (ENOSPC in mid-line,
// or an fsync error under [SyncEvery]); if even that fails, the next
// record starts with a newline so the fragment stays on a line of its
// own (which the verifier reports as malformed). [WriterSink] cannot take
// bytes back from a stream and uses the newline. [SyslogSink] sends each
// record as one datagram, or drops a stream connection after a failed
// send, so a fragment never merges with a record.
//
// # Sinks
//
// [FileSink] appends with O_APPEND|O_CREATE (mode 0600 for a file it
// creates), fsyncs per [SyncPolicy], reopens on [Logger.Reopen], and
// recreates a file removed behind its back. [WriterSink] writes to any
// io.Writer (stdout, for journald or a container runtime). [SyslogSink]
// sends RFC 5424 messages whose MSG is the JSON record to the local
// syslog socket, datagram first, stream as a fallback; with
// SyslogOptions.RFC3164 it writes the traditional local format instead,
// which journald's /dev/log understands (journald does not parse RFC
// 5424). Under systemd, a [WriterSink] on stdout reaches the journal too.
package audit
