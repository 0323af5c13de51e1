package sockwarden_test

import data.sockwarden

test_uname_allowed if {
	sockwarden.decision.allow with input as {"argv": ["uname", "-a"]}
}

test_sh_denied if {
	not sockwarden.decision.allow with input as {"argv": ["sh", "-c", "id"]}
	sockwarden.decision.message == "no shells" with input as {"argv": ["sh", "-c", "id"]}
}

test_other_denied if {
	not sockwarden.decision.allow with input as {"argv": ["rm", "-rf", "/"]}
}
