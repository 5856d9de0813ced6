package spread

import (
	"fmt"
	"testing"

	"github.com/shoal-ci/shoal/node"
)

func TestSamplePeersBoundsTheList(t *testing.T) {
	members := func(prefix string, n int) []node.Member {
		var out []node.Member
		for i := range n {
			name := fmt.Sprintf("%s%d", prefix, i)
			out = append(out, node.Member{Name: name, Addr: name + ":1"})
		}
		return out
	}
	ranks := map[string]string{}
	rankAll := func(ms []node.Member) {
		for _, m := range ms {
			ranks[m.Name] = rank("digest/me", m.Name)
		}
	}
	for _, tc := range []struct {
		holders, others, limit, wantHolders, wantOthers int
	}{
		{holders: 2, others: 197, limit: 16, wantHolders: 2, wantOthers: 14},    // a new release: every holder is listed
		{holders: 150, others: 49, limit: 16, wantHolders: 8, wantOthers: 8},    // half holders at most while others are there
		{holders: 190, others: 3, limit: 16, wantHolders: 13, wantOthers: 3},    // few others: holders fill the list
		{holders: 1, others: 5, limit: 16, wantHolders: 1, wantOthers: 5},       // a small mesh lists everyone
		{holders: 0, others: 300, limit: 16, wantHolders: 0, wantOthers: 16},    // no holder recorded yet
		{holders: 40, others: 40, limit: 1000, wantHolders: 40, wantOthers: 40}, // a limit above the mesh
	} {
		h, o := members("h", tc.holders), members("o", tc.others)
		rankAll(h)
		rankAll(o)
		got := samplePeers(h, o, ranks, tc.limit)
		nh, no := 0, 0
		for _, a := range got {
			if a[0] == 'h' {
				nh++
			} else {
				no++
			}
		}
		if nh != tc.wantHolders || no != tc.wantOthers {
			t.Errorf("%d holders, %d others, limit %d: listed %d holders and %d others, want %d and %d",
				tc.holders, tc.others, tc.limit, nh, no, tc.wantHolders, tc.wantOthers)
		}
		// The same inputs give the same list: a download keeps its peers from one refresh to the next.
		again := samplePeers(members("h", tc.holders), members("o", tc.others), ranks, tc.limit)
		if fmt.Sprint(again) != fmt.Sprint(got) {
			t.Errorf("%d holders, %d others: the list changed between two calls: %v, then %v", tc.holders, tc.others, got, again)
		}
	}
}
