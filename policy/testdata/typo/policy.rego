package sockwarden

# A typo'd key in one rule: "timout" for "timeout". The policy loads (the
# load check's synthetic request takes the default), and its own test,
# which compares a value, passes under opa test.

default decision := {"allow": false}

decision := {"allow": true, "timout": "5s"} if {
	input.argv[0] == "convert"
}

decision := {"allow": true, "timeout": "5s"} if {
	input.argv[0] == "uname"
}
