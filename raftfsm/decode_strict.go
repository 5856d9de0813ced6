package raftfsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// DecodeStrict decodes a command that another node asks the leader to commit. It is stricter than Decode, which
// reads the log and must accept whatever a leader committed: an unknown type is refused even when marked
// IgnoreUnknown, as are unknown fields and data after the body, so that what the leader commits is exactly what
// it understood. Every refusal is a bad_request *Error.
func DecodeStrict(data []byte) (Command, error) {
	if len(data) < 2 {
		return nil, badRequest("the command is %d bytes, too short for a command envelope", len(data))
	}
	if data[0] != EnvelopeVersion {
		return nil, badRequest("the command has envelope version %d; the leader understands %d: run the same Shoal version on every node", data[0], EnvelopeVersion)
	}
	t := CommandType(data[1])
	spec, ok := specs[t]
	if !ok {
		return nil, badRequest("unknown command type %d: run the same Shoal version on every node", t)
	}
	c := spec.New()
	dec := json.NewDecoder(bytes.NewReader(data[2:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, badRequest("the body of command type %d does not decode: %v", t, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badRequest("command type %d has data after its body", t)
	}
	return c, nil
}
