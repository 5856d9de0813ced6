package transport

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"
)

// FuzzReadFrame reads arbitrary bytes as a stream's request: it must never take more than the limit, never
// allocate for bytes that did not arrive, and accept exactly what writeFrame produces.
func FuzzReadFrame(f *testing.F) {
	frame := func(body string) []byte {
		var b bytes.Buffer
		writeFrame(&b, []byte(body))
		return b.Bytes()
	}
	f.Add(frame(`{"method":"join","body":{"name":"n2"}}`))
	f.Add(frame(`{"method":"apply"}`))
	f.Add(append(frame(`{}`), 'x'))
	f.Add([]byte{0x01, 0x00, 0x00, 0x00})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, '{'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		raw, err := readFrame(bytes.NewReader(data), JoinMaxFrame)
		if err != nil {
			return
		}
		if len(raw) > JoinMaxFrame {
			t.Fatalf("read a frame of %d bytes with a limit of %d", len(raw), JoinMaxFrame)
		}
		if len(data) < 4 || int(binary.BigEndian.Uint32(data)) != len(raw) || len(data) != 4+len(raw) {
			t.Fatalf("accepted %d bytes of input as a frame of %d", len(data), len(raw))
		}
		var b bytes.Buffer
		if err := writeFrame(&b, raw); err != nil || !bytes.Equal(b.Bytes(), data) {
			t.Fatalf("the frame does not round-trip: %v", err)
		}
		var req rpcRequest
		_ = json.Unmarshal(raw, &req) // what dispatch does next: must not panic
	})
}
