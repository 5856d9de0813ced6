package raftfsm

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// Retention bounds the history the state keeps. The leader decides what to prune (PrunePlan) and commits one
// Prune command naming the records; Apply removes exactly those, and refuses the whole command if it names
// anything an environment needs (PruneRefusal). Zero fields take the defaults.
type Retention struct {
	// Builds and Releases are kept per app, the newest first; Deployments per environment.
	Builds      int `json:"builds,omitempty"`
	Releases    int `json:"releases,omitempty"`
	Deployments int `json:"deployments,omitempty"`
	// DeliveryAge and DepartedAge: finished notification deliveries and departed-member records older than this
	// go.
	DeliveryAge Duration `json:"delivery_age,omitempty"`
	DepartedAge Duration `json:"departed_age,omitempty"`
	// Apps overrides Builds and Releases for single apps.
	Apps map[string]AppRetention `json:"apps,omitempty"`
	Meta
}

// AppRetention is one app's own limits (0: the mesh's).
type AppRetention struct {
	Builds   int `json:"builds,omitempty"`
	Releases int `json:"releases,omitempty"`
}

// Defaults: with them a busy app holds at most 50 builds and 20 releases, an environment 50 deployments (see
// docs/operations.md, "Retention", for the size this gives).
const (
	DefaultKeepBuilds      = 50
	DefaultKeepReleases    = 20
	DefaultKeepDeployments = 50
	DefaultDeliveryAge     = 7 * 24 * time.Hour
	DefaultDepartedAge     = 30 * 24 * time.Hour
	// maxPrune bounds the records one Prune command names, so one entry stays small; the leader prunes again.
	maxPrune = 2000
)

// Limits returns the retention in force (the stored one with defaults filled in).
func (s *State) Limits() Retention {
	r := Retention{}
	if s.Retention != nil {
		r = *s.Retention
	}
	r.Builds = cmpOr(r.Builds, DefaultKeepBuilds)
	r.Releases = cmpOr(r.Releases, DefaultKeepReleases)
	r.Deployments = cmpOr(r.Deployments, DefaultKeepDeployments)
	r.DeliveryAge = cmpOr(r.DeliveryAge, Duration(DefaultDeliveryAge))
	r.DepartedAge = cmpOr(r.DepartedAge, Duration(DefaultDepartedAge))
	return r
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (r Retention) forApp(app string) (builds, releases int) {
	a := r.Apps[app]
	return cmpOr(a.Builds, r.Builds), cmpOr(a.Releases, r.Releases)
}

// Prune removes history the leader chose by the retention (PrunePlan). It is refused whole if it names a record
// an environment needs; a record already gone is skipped (two leaders' prunes may overlap).
type Prune struct {
	Builds     []string `json:",omitempty"`
	Releases   []string `json:",omitempty"` // ReleaseKey
	Deploys    []string `json:",omitempty"`
	Deliveries []string `json:",omitempty"`
	Departed   []string `json:",omitempty"`
}

// RetentionSet stores the mesh's retention (nil fields and zeros: the defaults).
type RetentionSet struct {
	Retention Retention `json:"Retention"`
}

const (
	CmdPrune        CommandType = 52
	CmdRetentionSet CommandType = 53
)

func (*Prune) Type() CommandType        { return CmdPrune }
func (*RetentionSet) Type() CommandType { return CmdRetentionSet }

// Empty reports whether the prune names nothing.
func (p *Prune) Empty() bool {
	return len(p.Builds)+len(p.Releases)+len(p.Deploys)+len(p.Deliveries)+len(p.Departed) == 0
}

// needs is what every environment needs kept: releases in use (ReleasesInUse), each app's newest release (what
// auto deploy goes to), and per environment its unfinished deployments, its latest one, its latest succeeded one,
// the one its rollback target comes from, and those of its app's newest release (auto deploy asks whether that
// was deployed already). A build stays while it is live or its release stays.
type needs struct {
	releases map[string]bool // ReleaseKey
	deploys  map[string]bool
}

func (s *State) needs() needs {
	n := needs{releases: s.ReleasesInUse(), deploys: map[string]bool{}}
	newest := map[string]string{} // app → version of its newest release
	for app := range s.idx().appReleases {
		if rs := s.AppReleases(app); len(rs) > 0 {
			newest[app] = rs[len(rs)-1].Version
			n.releases[ReleaseKey(app, newest[app])] = true
		}
	}
	for env := range s.idx().envDeploys {
		ds := s.EnvDeploys(env)
		n.deploys[ds[len(ds)-1].ID] = true
		var lastOK *Deployment
		for _, d := range ds {
			if !d.Finished() || (d.Release != "" && d.Release == newest[d.App]) {
				n.deploys[d.ID] = true
			}
			if d.State == DeploySucceeded {
				lastOK = d
			}
		}
		if lastOK != nil {
			n.deploys[lastOK.ID] = true
		}
		if e := s.Envs[env]; e != nil {
			var prev *Deployment
			for _, d := range ds {
				if d.Kind == DeployKindDeploy && d.State == DeploySucceeded && d.Release == e.Desired && d.Previous != "" && d.Previous != e.Desired {
					prev = d
				}
			}
			if prev != nil {
				n.deploys[prev.ID] = true
			}
		}
	}
	return n
}

// PruneRefusal says why p may not be applied ("" when it may): the rule Apply enforces, whatever leader wrote p.
func (s *State) PruneRefusal(p *Prune) string {
	n := s.needs()
	for _, id := range p.Builds {
		b := s.Builds[id]
		if b == nil {
			continue
		}
		if !b.Finished() {
			return "build " + id + " is " + b.State
		}
		if b.Release != "" && s.Releases[ReleaseKey(b.App, b.Release)] != nil && !slices.Contains(p.Releases, ReleaseKey(b.App, b.Release)) {
			return "build " + id + " made release " + b.Release + ", which stays"
		}
	}
	for _, key := range p.Releases {
		if s.Releases[key] != nil && n.releases[key] {
			return "release " + key + " is in use or is its app's newest"
		}
	}
	for _, id := range p.Deploys {
		if s.Deploys[id] != nil && n.deploys[id] {
			return "deployment " + id + " is one its environment needs (unfinished, latest, latest succeeded, rollback source, or of the newest release)"
		}
	}
	for _, id := range p.Deliveries {
		if s.Notify != nil {
			if d := s.Notify.Deliveries[id]; d != nil && d.State == DeliveryPending {
				return "delivery " + id + " is pending"
			}
		}
	}
	return ""
}

func applyPrune(s *State, _ uint64, c *Prune) (any, *Error) {
	if n := len(c.Builds) + len(c.Releases) + len(c.Deploys) + len(c.Deliveries) + len(c.Departed); n > maxPrune {
		return nil, badRequest("a prune names at most %d records (this one %d): split it", maxPrune, n)
	}
	if why := s.PruneRefusal(c); why != "" {
		return nil, conflict("prune refused: %s", why)
	}
	for _, id := range c.Builds {
		s.removeBuild(id)
	}
	for _, key := range c.Releases {
		s.removeRelease(key)
	}
	for _, id := range c.Deploys {
		s.removeDeploy(id)
	}
	if s.Notify != nil {
		for _, id := range c.Deliveries {
			delete(s.Notify.Deliveries, id)
		}
	}
	for _, name := range c.Departed {
		delete(s.Departed, name)
	}
	return c, nil
}

func applyRetentionSet(s *State, index uint64, c *RetentionSet) (any, *Error) {
	r := c.Retention
	if r.Builds < 0 || r.Releases < 0 || r.Deployments < 0 || r.DeliveryAge < 0 || r.DepartedAge < 0 {
		return nil, badRequest("retention numbers must not be negative (0: the default)")
	}
	for app, a := range r.Apps {
		if a.Builds < 0 || a.Releases < 0 {
			return nil, badRequest("retention of app %q must not be negative (0: the mesh's)", app)
		}
	}
	r.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	if s.Retention != nil {
		r.CreateIndex = s.Retention.CreateIndex
	}
	s.Retention = &r
	return s.Limits(), nil
}

// PrunePlan is what the leader prunes now: per app the builds and releases beyond its newest N, per environment
// the finished deployments beyond its newest N, finished deliveries and departed members older than their age,
// leaving out whatever PruneRefusal would refuse. It visits each app's and environment's own records. nil: nothing
// to prune.
func (s *State) PrunePlan(now time.Time) *Prune {
	lim := s.Limits()
	n := s.needs()
	p := &Prune{}
	full := func() bool {
		return len(p.Builds)+len(p.Releases)+len(p.Deploys)+len(p.Deliveries)+len(p.Departed) >= maxPrune
	}
	for _, app := range sortedNames(s.idx().appReleases) {
		_, keep := lim.forApp(app)
		rs := s.AppReleases(app)
		for i := 0; i < len(rs)-keep && !full(); i++ {
			if key := ReleaseKey(app, rs[i].Version); !n.releases[key] {
				p.Releases = append(p.Releases, key)
			}
		}
	}
	for _, app := range sortedNames(s.idx().appBuilds) {
		keep, _ := lim.forApp(app)
		bs := s.AppBuilds(app)
		for i := 0; i < len(bs)-keep && !full(); i++ {
			b := bs[i]
			if !b.Finished() {
				continue
			}
			if key := ReleaseKey(app, b.Release); b.Release != "" && s.Releases[key] != nil && !slices.Contains(p.Releases, key) {
				continue
			}
			p.Builds = append(p.Builds, b.ID)
		}
	}
	for _, env := range sortedNames(s.idx().envDeploys) {
		ds := s.EnvDeploys(env)
		for i := 0; i < len(ds)-lim.Deployments && !full(); i++ {
			if !n.deploys[ds[i].ID] {
				p.Deploys = append(p.Deploys, ds[i].ID)
			}
		}
	}
	if s.Notify != nil {
		for _, id := range sortedNames(s.Notify.Deliveries) {
			d := s.Notify.Deliveries[id]
			at := d.Event.At
			if k := len(d.Attempts); k > 0 {
				at = d.Attempts[k-1].At
			}
			if d.State != DeliveryPending && now.Sub(at) > time.Duration(lim.DeliveryAge) && !full() {
				p.Deliveries = append(p.Deliveries, id)
			}
		}
	}
	for _, name := range sortedNames(s.Departed) {
		if now.Sub(s.Departed[name]) > time.Duration(lim.DepartedAge) && !full() {
			p.Departed = append(p.Departed, name)
		}
	}
	if p.Empty() {
		return nil
	}
	return p
}

// BuildGone reports whether a build id names a build that was pruned or whose app was deleted: its log on disk
// may go. A build number the app has not reached yet is not gone (it will be created).
func (s *State) BuildGone(id string) bool {
	if s.Builds[id] != nil {
		return false
	}
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return true
	}
	a := s.Apps[id[:i]]
	if a == nil {
		return true
	}
	n, err := strconv.ParseUint(id[i+1:], 10, 64)
	return err != nil || n < a.NextBuild
}
