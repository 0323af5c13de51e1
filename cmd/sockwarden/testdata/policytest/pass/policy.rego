package sockwarden

default decision := {"allow": false}

decision := {"allow": true, "timeout": "5s"} if {
	input.argv[0] == "uname"
}

decision := {"allow": false, "message": "no shells"} if {
	input.argv[0] in {"sh", "bash"}
}
