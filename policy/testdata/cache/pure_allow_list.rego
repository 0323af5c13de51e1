# A pure allow-list: the decision depends only on exe, argv and peer.uid.
package sockwarden

tools := {"/usr/bin/uname", "/usr/bin/true", "/usr/bin/date"}

default decision := {"allow": false, "message": "not allowed"}

decision := {
	"allow": true,
	"reasons": [sprintf("%s for uid %d (%s)", [input.exe, input.peer.uid, object.get(input.peer, "user", "?")])],
	"rlimits": {"cpu": 5},
	"env": {"PATH": "/usr/bin:/bin"},
} if {
	input.exe in tools
	input.peer.uid in data.sockwarden.uids
	every a in array.slice(input.argv, 1, count(input.argv)) {
		not startswith(a, "/")
	}
}

# Rules reached through data with a key from input, print and trace:
# all deterministic.
exe_note := data.sockwarden.notes[input.exe]

uids := [33, 1000]

notes := {"/usr/bin/uname": "uname"}

debug if {
	print("argv", input.argv)
	trace("checked")
}
