# walk(input) sees request_id and time too.
package sockwarden

default decision := {"allow": false}

decision := {"allow": true} if {
	input.peer.uid == 33
	count([v | walk(input, [_, v]); v == "forbidden"]) == 0
}
