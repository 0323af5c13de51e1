package sockwarden

default decision := {"allow": false}

decision := {"allow": true} if {
	input.peer.uid == 33
	no_such_function(input.argv)
}
