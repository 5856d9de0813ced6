package notify

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// deliverer sends the pending deliveries of the replicated state, one attempt at a time each, and records every
// attempt through Raft. A new leader's deliverer starts from what is recorded: a delivery whose attempt was
// sent but not recorded is sent again, with the same idempotency key.
type deliverer struct {
	s        *Service
	inflight map[string]bool
	done     chan string
}

func newDeliverer(s *Service) *deliverer {
	return &deliverer{s: s, inflight: map[string]bool{}, done: make(chan string, maxInFlight)}
}

// job is one attempt to make: a copy of the delivery and of its target, read under the state's lock.
type job struct {
	d    raftfsm.Delivery
	sub  *raftfsm.Subscription
	frg  *raftfsm.Forge
	mesh string
}

func (dl *deliverer) run(ctx context.Context) {
	fsm := dl.s.n.FSM()
	var running int
	defer func() {
		for ; running > 0; running-- {
			<-dl.done
		}
	}()
	for {
		changed := fsm.Changed()
		now := time.Now()
		var (
			due  []job
			next time.Time
		)
		fsm.Read(func(st *raftfsm.State) {
			if st.Notify == nil {
				return
			}
			pending := make([]*raftfsm.Delivery, 0, 16)
			for _, d := range st.Notify.Deliveries {
				if d.State == raftfsm.DeliveryPending {
					pending = append(pending, d)
				}
			}
			slices.SortFunc(pending, func(a, b *raftfsm.Delivery) int { return cmp.Compare(a.Seq, b.Seq) })
			// A target gets the events of one build or deployment in order: a later one waits while an earlier
			// one is pending (a forge must not see "success" overtaken by "pending").
			blocked := map[string]bool{}
			for _, d := range pending {
				key := d.Target + "|" + raftfsm.EventRecord(d.Event.Key)
				if blocked[key] {
					continue
				}
				blocked[key] = true
				if dl.inflight[d.ID] {
					continue
				}
				if d.NextAt.After(now) {
					if next.IsZero() || d.NextAt.Before(next) {
						next = d.NextAt
					}
					continue
				}
				j := job{d: *d, sub: clone(st.Notify.Subs[d.Target]), frg: clone(st.Notify.Forges[d.App])}
				j.d.Attempts = slices.Clone(d.Attempts)
				if st.Mesh != nil {
					j.mesh = st.Mesh.Name
				}
				due = append(due, j)
			}
		})
		for _, j := range due {
			if running >= maxInFlight {
				break
			}
			dl.inflight[j.d.ID] = true
			running++
			go func() {
				dl.attempt(ctx, j)
				dl.done <- j.d.ID
			}()
		}
		var timer <-chan time.Time
		t := time.NewTimer(time.Hour)
		if !next.IsZero() {
			t.Reset(time.Until(next))
			timer = t.C
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case id := <-dl.done:
			delete(dl.inflight, id)
			running--
		case <-changed:
		case <-timer:
		}
		t.Stop()
	}
}

func clone[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// attempt sends one try of j and records it. If the record fails (leadership lost), the next leader sends the
// try again.
func (dl *deliverer) attempt(ctx context.Context, j job) {
	s := dl.s
	n := len(j.d.Attempts) + 1
	start := time.Now()
	status, permanent, err := dl.send(ctx, j, n)
	if ctx.Err() != nil {
		return // not recorded: the next leader tries again
	}
	a := raftfsm.Attempt{N: n, At: start.UTC(), Node: s.n.Name(), Status: status, Millis: time.Since(start).Milliseconds()}
	ok := err == nil
	if err != nil {
		a.Error = err.Error()
	}
	rec := &raftfsm.NotifyAttempt{ID: j.d.ID, Attempt: a, Done: ok}
	if !ok {
		if n >= s.opts.MaxAttempts || permanent {
			rec.GiveUp = true
		} else {
			rec.NextAt = time.Now().Add(backoff(s.opts.RetryBase, s.opts.RetryMax, n)).UTC()
		}
	}
	outcome := "ok"
	if !ok {
		outcome = "error"
	}
	s.m.attempts.WithLabelValues(j.d.Kind, outcome).Inc()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.n.Apply(wctx, rec, node.OnCommit); err != nil {
		if raftfsm.KindOf(err) != raftfsm.KindConflict {
			s.log.Warn("record a delivery attempt", "delivery", j.d.ID, "attempt", n, "err", err)
		}
		return
	}
	switch {
	case ok:
		s.m.deliveries.WithLabelValues(j.d.Kind, raftfsm.DeliveryDelivered).Inc()
		s.m.latency.Observe(time.Since(j.d.Event.At).Seconds())
	case rec.GiveUp:
		s.m.deliveries.WithLabelValues(j.d.Kind, raftfsm.DeliveryFailed).Inc()
		s.log.Warn("delivery failed for good", "delivery", j.d.ID, "attempts", n, "err", err)
	}
}

// backoff is the wait after the n-th failed attempt: base, 2·base, 4·base, ... up to max.
func backoff(base, maxWait time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait)
}

// send makes one HTTP request for j and says how the receiver answered: a 2xx status is a delivery. A request
// that cannot be made (no target left, an event with nothing to report) is a permanent failure: retrying would
// not change it.
func (dl *deliverer) send(ctx context.Context, j job, n int) (status int, permanent bool, err error) {
	req, err := dl.request(ctx, j, n)
	if err != nil {
		return 0, true, err
	}
	resp, err := dl.s.opts.Client.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, false, fmt.Errorf("the receiver answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return resp.StatusCode, false, nil
}

func (dl *deliverer) request(ctx context.Context, j job, n int) (*http.Request, error) {
	if j.d.Target == raftfsm.ForgeTarget {
		if j.frg == nil {
			return nil, fmt.Errorf("app %q has no forge any more", j.d.App)
		}
		return forgeRequest(ctx, j.frg, &j.d)
	}
	if j.sub == nil {
		return nil, fmt.Errorf("subscription %q no longer exists", j.d.Target)
	}
	var (
		body []byte
		err  error
	)
	if j.sub.Kind == raftfsm.NotifyKindSlack {
		body, err = slackBody(&j.d)
	} else {
		body, err = webhookBody(&j.d, j.mesh)
	}
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.sub.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Shoal/"+node.Version)
	if j.sub.Kind == raftfsm.NotifyKindWebhook {
		req.Header.Set("X-Shoal-Event", j.d.Event.Name)
		req.Header.Set("X-Shoal-Delivery", j.d.ID)
		req.Header.Set("X-Shoal-Attempt", fmt.Sprint(n))
		if j.sub.Secret != "" {
			req.Header.Set("X-Shoal-Signature-256", Sign(j.sub.Secret, body))
		}
	}
	return req, nil
}
