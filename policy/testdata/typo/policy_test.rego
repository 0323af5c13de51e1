package sockwarden_test

import data.sockwarden

test_convert_allowed if {
	sockwarden.decision.allow with input as {"argv": ["convert"]}
}

test_uname_allowed if {
	sockwarden.decision.allow with input as {"argv": ["uname"]}
}
