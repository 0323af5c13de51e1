package sockwarden_test

import data.sockwarden

test_uname_allowed {
	sockwarden.decision.allow with input as {"argv": ["uname"]}
}

test_rm_denied {
	not sockwarden.decision.allow with input as {"argv": ["rm"]}
}
