package errs

import (
	"encoding/json"
	"fmt"
	"testing"
)

func TestCodeCrossesWrappingAndTheWire(t *testing.T) {
	err := fmt.Errorf("create app: %w", New(Conflict, "app %q exists: choose another name", "web"))
	if CodeOf(err) != Conflict || err.Error() != `create app: app "web" exists: choose another name` {
		t.Fatalf("wrapped: %q %q", CodeOf(err), err)
	}
	if CodeOf(fmt.Errorf("plain")) != "" {
		t.Fatal("an error without a code has one")
	}
	// What a node-to-node call carries: the same fields back.
	b, _ := json.Marshal(New(NoLeader, "no leader"))
	var back Error
	if err := json.Unmarshal(b, &back); err != nil || back.Code != NoLeader || back.Message != "no leader" || string(b) != `{"code":"no_leader","message":"no leader"}` {
		t.Fatalf("wire form %s → %+v %v", b, back, err)
	}
}
