# Imports of input subtrees are resolved to input.peer / input.argv.
package sockwarden

import input.argv
import input.peer

default decision := {"allow": false}

decision := {"allow": true} if {
	peer.uid == 33
	argv[0] == "true"
	some i
	argv[i] == "-v"
}
