# "x" in input: a bare input.
package sockwarden

default decision := {"allow": false}

decision := {"allow": true} if {
	input.peer.uid == 33
	not "sudo" in input
}
