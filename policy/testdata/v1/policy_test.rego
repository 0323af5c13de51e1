package sockwarden_test

import data.sockwarden

test_uname_allowed if {
	sockwarden.decision.allow with input as {"argv": ["uname"]}
}

test_rm_denied if {
	not sockwarden.decision.allow with input as {"argv": ["rm"]}
}
