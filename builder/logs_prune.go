package builder

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// logPruneInterval is how often a node removes the logs of builds that left the state.
const logPruneInterval = time.Minute

// pruneLogsLoop removes, now and every logPruneInterval until the service closes, the build logs this node holds
// of builds that are gone from the state: pruned by the retention (raftfsm/retention.go) or deleted with their
// app. Logs go with their builds, on every node that ran one.
func (s *Service) pruneLogsLoop() {
	defer s.wg.Done()
	t := time.NewTicker(logPruneInterval)
	defer t.Stop()
	for {
		s.pruneLogs()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pruneLogs removes the logs of gone builds and returns their ids.
func (s *Service) pruneLogs() []string {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".log"); ok && e.Type().IsRegular() {
			ids = append(ids, id)
		}
	}
	var gone []string
	s.n.FSM().Read(func(st *raftfsm.State) {
		for _, id := range ids {
			if st.BuildGone(id) {
				gone = append(gone, id)
			}
		}
	})
	var removed []string
	for _, id := range gone {
		s.logs.mu.Lock()
		_, active := s.logs.active[id]
		s.logs.mu.Unlock()
		if active {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, id+".log")); err == nil {
			removed = append(removed, id)
		} else if !os.IsNotExist(err) {
			s.log.Warn("remove the log of a pruned build", "build", id, "err", err)
		}
	}
	if len(removed) > 0 {
		s.log.Info("removed the logs of pruned builds", "count", len(removed))
	}
	return removed
}
