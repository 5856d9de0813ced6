package deployer

import (
	"net/http"
	"strconv"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/raftfsm"
)

// pipelineStages returns app's pipeline, first stage first; nil when it has none.
func pipelineStages(s *raftfsm.State, app string) []raftfsm.PipelineStage {
	if p := s.Pipelines[app]; p != nil {
		return p.Stages
	}
	return nil
}

// writePipeline stores app's pipeline (no stages removes it) and answers with it.
func (d *Deployer) writePipeline(w http.ResponseWriter, r *http.Request, app string, stages []raftfsm.PipelineStage, cas uint64) error {
	res, err := d.n.Apply(r.Context(), &raftfsm.PipelinePut{Pipeline: raftfsm.Pipeline{App: app, Stages: stages}, CAS: cas}, api.ForRequest(r))
	if err != nil {
		return err
	}
	if len(res.Value) == 0 { // removed
		d.http.WriteJSON(w, http.StatusOK, raftfsm.Pipeline{App: app, Stages: []raftfsm.PipelineStage{}})
		return nil
	}
	w.Header().Set("X-Shoal-Index", strconv.FormatUint(res.Index, 10))
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(append(res.Value, '\n'))
	return err
}
