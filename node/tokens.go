package node

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/shoal-ci/shoal/raftfsm"
)

// API tokens look like "<id>.<secret>": the id finds the record, the secret is checked against its sha256.
// Join tokens look like "SHOAL-<ca sha256>-<id>.<secret>": the CA hash lets the joiner check it reached the right
// mesh before it sends the secret.

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// NewAPIToken returns the token text and the record to store (which holds only the secret's hash).
func NewAPIToken(name, role string) (string, raftfsm.Token) {
	id, secret := randomHex(6), randomHex(20)
	return id + "." + secret, raftfsm.Token{ID: id, Name: name, Role: role, SecretHash: hashSecret(secret)}
}

// CheckAPIToken finds the token record for text, or nil.
func CheckAPIToken(s *raftfsm.State, text string) *raftfsm.Token {
	id, secret, ok := strings.Cut(text, ".")
	if !ok {
		return nil
	}
	t := s.Tokens[id]
	if t == nil {
		return nil
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(t.SecretHash)) != 1 {
		return nil
	}
	return t
}

// JoinTokenText renders a join token.
func JoinTokenText(caHash string, t *raftfsm.JoinToken) string {
	return fmt.Sprintf("SHOAL-%s-%s.%s", caHash, t.ID, t.Secret)
}

// ParseJoinToken splits a join token into the pinned CA hash, the token id and the secret.
func ParseJoinToken(text string) (caHash, id, secret string, err error) {
	parts := strings.SplitN(strings.TrimSpace(text), "-", 3)
	bad := fmt.Errorf("join token is malformed: expected SHOAL-<ca hash>-<id>.<secret>, as printed by `node init` or `node token join`")
	if len(parts) != 3 || parts[0] != "SHOAL" || len(parts[1]) != 64 {
		return "", "", "", bad
	}
	if _, err := hex.DecodeString(parts[1]); err != nil {
		return "", "", "", bad
	}
	id, secret, ok := strings.Cut(parts[2], ".")
	if !ok || id == "" || secret == "" {
		return "", "", "", bad
	}
	return parts[1], id, secret, nil
}
