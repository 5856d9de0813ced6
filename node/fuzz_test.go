package node

import (
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/raftfsm"
)

// FuzzParseJoinToken parses arbitrary join tokens: no panic, and a token it accepts renders back to itself.
func FuzzParseJoinToken(f *testing.F) {
	ca := strings.Repeat("ab", 32)
	f.Add("SHOAL-" + ca + "-0a1b2c3d.00112233445566778899aabbccddeeff")
	f.Add("  SHOAL-" + ca + "-x.y \n")
	f.Add("SHOAL-" + ca + "-.secret")
	f.Add("SHOAL-" + strings.Repeat("zz", 32) + "-a.b")
	f.Add("SHOAL--a.b")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		caHash, id, secret, err := ParseJoinToken(text)
		if err != nil {
			return
		}
		if len(caHash) != 64 || id == "" || secret == "" || strings.Contains(id, ".") {
			t.Fatalf("accepted %q as ca %q id %q secret %q", text, caHash, id, secret)
		}
		if got := JoinTokenText(caHash, &raftfsm.JoinToken{ID: id, Secret: secret}); got != strings.TrimSpace(text) {
			t.Fatalf("%q renders back as %q", text, got)
		}
	})
}
