package sockwarden_test

import data.sockwarden

test_uname_allowed if {
	sockwarden.decision.allow with input as {"argv": ["uname", "-a"]}
}

# Deliberately wrong: rm is denied.
test_rm_allowed if {
	sockwarden.decision.allow with input as {"argv": ["rm", "-rf", "/"]}
}
