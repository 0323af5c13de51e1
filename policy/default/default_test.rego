package sockwarden_test

import data.sockwarden

server := {"uid": 1000, "gid": 1000}

req(uid) := {
	"argv": ["uname", "-a"],
	"exe": "/usr/bin/uname",
	"peer": {"pid": 4242, "uid": uid, "gid": uid},
	"socket": "/run/sockwarden/exec.sock",
	"request_id": "test",
	"time": "2026-11-21T10:00:00Z",
}

test_own_uid_allowed if {
	d := sockwarden.decision with input as req(1000) with data.sockwarden.server as server
	d.allow
	d.rlimits.core == 0
	not d.rlimits.as
	d.landlock.ro == ["/"]
	d.landlock.rw == ["/dev/null"]
	not "/tmp" in d.landlock.rw
	not d.run_as
}

test_other_uid_denied if {
	d := sockwarden.decision with input as req(33) with data.sockwarden.server as server
	not d.allow
	contains(d.message, "default policy")
}

test_root_caller_denied_when_server_not_root if {
	d := sockwarden.decision with input as req(0) with data.sockwarden.server as server
	not d.allow
}

test_root_server_runs_children_as_nobody_without_dynamic_uids if {
	d := sockwarden.decision with input as req(0) with data.sockwarden.server as {"uid": 0, "gid": 0, "dynamic_uids": false}
	d.allow
	d.run_as == {"user": "65534", "group": "65534", "groups": []}
}

test_root_server_runs_children_as_dynamic_uids if {
	d := sockwarden.decision with input as req(0) with data.sockwarden.server as {"uid": 0, "gid": 0, "dynamic_uids": true}
	d.allow
	d.run_as == {"dynamic": true}
}

test_no_server_data_denies if {
	d := sockwarden.decision with input as req(1000) with data.sockwarden.server as {}
	not d.allow
}
