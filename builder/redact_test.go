package builder

import (
	"bytes"
	"strings"
	"testing"
)

func TestRedactorAcrossWrites(t *testing.T) {
	var out bytes.Buffer
	r := NewRedactor(&out, []string{"hunter2", "", "hunter2-long", "multi\nline"})
	for _, chunk := range []string{"pass: hun", "ter2\nlong: hunter", "2-long\r", "x multi and line\n", "tail hunt", "er2"} {
		if _, err := r.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "pass: [redacted]\nlong: [redacted]\rx [redacted] and [redacted]\ntail [redacted]"
	if out.String() != want {
		t.Errorf("got %q\nwant %q", out.String(), want)
	}
}

func TestRedactorLongLineWithoutNewline(t *testing.T) {
	var out bytes.Buffer
	secret := "SECRETVALUE"
	r := NewRedactor(&out, []string{secret})
	// A secret straddling the point where the long line is cut must still be hidden.
	line := strings.Repeat("a", maxPending-5) + secret + strings.Repeat("b", 100)
	for i := 0; i < len(line); i += 1000 {
		r.Write([]byte(line[i:min(i+1000, len(line))]))
	}
	if out.Len() == 0 {
		t.Error("a long unterminated line must be written out before it ends")
	}
	r.Flush()
	if strings.Contains(out.String(), "SECRET") || !strings.Contains(out.String(), Redacted) {
		t.Errorf("secret leaked or not redacted at the cut")
	}
	if want := strings.Repeat("a", maxPending-5) + Redacted + strings.Repeat("b", 100); out.String() != want {
		t.Errorf("output differs from the redacted line (len %d vs %d)", out.Len(), len(want))
	}
}
