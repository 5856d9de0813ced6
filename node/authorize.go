package node

import (
	"context"
	"fmt"

	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Codes of forwarded writes the leader refuses for who asked.
const (
	CodeUnauthorized = errs.Unauthorized
	CodeForbidden    = errs.Forbidden
)

// authorizeForwarded decides whether a command that peer forwarded, on behalf of the API token tokenID (""
// when the node writes on its own), may be committed. It reads the leader's state, so it must run on the leader.
func (n *Node) authorizeForwarded(peer, tokenID string, c raftfsm.Command) *errs.Error {
	// Who may write each command type is part of its registration (raftfsm.Spec); the leader decides against its
	// own state: a token revoked there is refused at once, whatever the forwarding node believed, and a node's
	// certificate alone never carries an admin's power.
	a, listed := raftfsm.SpecOf(c.Type())
	if !listed {
		return errs.New(errs.BadRequest, "command type %d is not registered", c.Type())
	}
	what := fmt.Sprintf("%T", c)
	if tokenID != "" && a.Role != "" {
		var tok *raftfsm.Token
		n.fsm.Read(func(s *raftfsm.State) {
			if t := s.Tokens[tokenID]; t != nil {
				c := *t
				tok = &c
			}
		})
		if tok == nil {
			return errs.New(CodeUnauthorized, "the API token was revoked (the leader does not know token %q): ask an admin for a new one", tokenID)
		}
		if roleRank[tok.Role] < roleRank[a.Role] {
			return errs.New(CodeForbidden, "token %q has role %s; %s needs %s", tok.Name, tok.Role, what, a.Role)
		}
		return nil
	}
	if !a.Node {
		if a.Role == "" {
			return errs.New(CodeForbidden, "%s is written only by the leader itself; node %q may not forward it", what, peer)
		}
		return errs.New(CodeForbidden, "%s needs an API token of role %s; node %q sent none, and a node certificate alone is not enough", what, a.Role, peer)
	}
	if a.About != nil {
		if about := a.About(c); about != peer {
			return errs.New(CodeForbidden, "node %q may write %s only about itself, not about %q", peer, what, about)
		}
	}
	return nil
}

// roleRank orders roles: a token may do what its role and every lower role may.
var roleRank = map[string]int{raftfsm.RoleReader: 1, raftfsm.RoleDeployer: 2, raftfsm.RoleAdmin: 3}

// RoleAllows reports whether a token of role has the authority of need (its own role or a lower one).
func RoleAllows(role, need string) bool { return roleRank[role] >= roleRank[need] }

type ctxKey int

const tokenKey ctxKey = 1

// WithToken makes ctx that of a request authenticated with tok: the writes made under it act for tok (the API
// server puts the token of each request there).
func WithToken(ctx context.Context, tok *raftfsm.Token) context.Context {
	return context.WithValue(ctx, tokenKey, tok)
}

// TokenFrom returns the API token ctx acts for (WithToken), or nil.
func TokenFrom(ctx context.Context) *raftfsm.Token {
	t, _ := ctx.Value(tokenKey).(*raftfsm.Token)
	return t
}

// tokenIDFrom is the id of the API token that authorised the request ctx belongs to ("" for a node's own work).
func tokenIDFrom(ctx context.Context) string {
	if t := TokenFrom(ctx); t != nil {
		return t.ID
	}
	return ""
}

// WithTokenID makes the writes made under ctx act for the API token with that id, as the writes of a request
// authenticated with it do: the leader then authorizes them against that token. In-process callers that write on
// an admin's behalf, tests among them, use it; without it a write is the node's own.
func WithTokenID(ctx context.Context, id string) context.Context {
	return WithToken(ctx, &raftfsm.Token{ID: id})
}
