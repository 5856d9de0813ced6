package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/raftfsm"
)

// The apps and environments lists page by name: every item once, in order, whatever the page size, and a bad
// limit or cursor is refused with what to do.
func TestListsArePaged(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	ctx := context.Background()
	var want []string
	for i := range 7 {
		name := fmt.Sprintf("app%02d", 6-i) // created out of order
		if _, err := n.Apply(ctx, &raftfsm.AppPut{App: raftfsm.App{Name: name}, Create: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Apply(ctx, &raftfsm.EnvPut{Env: raftfsm.Env{Name: "env-" + name, App: name}, Create: true}); err != nil {
			t.Fatal(err)
		}
		want = append([]string{name}, want...)
	}
	get := func(path string, out any) (string, int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+n.HTTPAddr()+path, nil)
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil && resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
		return resp.Header.Get(api.NextCursorHeader), resp.StatusCode
	}
	for _, limit := range []int{1, 2, 3, 7, 100} {
		var got []string
		cursor, pages := "", 0
		for {
			var apps []api.AppView
			next, code := get(fmt.Sprintf("/v1/apps?limit=%d&cursor=%s", limit, cursor), &apps)
			if code != http.StatusOK {
				t.Fatalf("page %d: status %d", pages, code)
			}
			pages++
			for _, a := range apps {
				got = append(got, a.Name)
			}
			if next == "" {
				break
			}
			if len(apps) != limit {
				t.Fatalf("limit %d: a page of %d with a next cursor", limit, len(apps))
			}
			cursor = next
		}
		if strings.Join(got, ",") != strings.Join(want, ",") || pages != (len(want)+limit-1)/limit {
			t.Fatalf("limit %d: %d pages gave %v, want %v", limit, pages, got, want)
		}
	}
	var all []api.AppView
	if next, _ := get("/v1/apps", &all); len(all) != len(want) || next != "" {
		t.Fatalf("without a limit: %d apps, next %q", len(all), next)
	}
	var envs []raftfsm.Env
	if next, _ := get("/v1/envs?limit=2&cursor=env-app01", &envs); len(envs) != 2 || envs[0].Name != "env-app02" || next != "env-app03" {
		t.Fatalf("envs page after env-app01: %v, next %q", envs, next)
	}
	envs = nil
	if next, _ := get("/v1/envs?app=app03&limit=1", &envs); len(envs) != 1 || envs[0].Name != "env-app03" || next != "" {
		t.Fatalf("envs of app03: %v, next %q", envs, next)
	}
	for _, bad := range []string{"/v1/apps?limit=-1", "/v1/apps?limit=x", fmt.Sprintf("/v1/envs?limit=%d", api.MaxPageLimit+1)} {
		if _, code := get(bad, nil); code != http.StatusBadRequest {
			t.Fatalf("%s: status %d, want 400", bad, code)
		}
	}
}

// PageNewest walks a newest-first list by creation index: pages follow on without gaps or repeats, and a cursor
// whose item is gone (pruned) still continues from where it was.
func TestPageNewest(t *testing.T) {
	items := []uint64{90, 70, 50, 30, 10}
	id := func(v uint64) uint64 { return v }
	page, next := api.PageNewest(items, id, 0, 2)
	if fmt.Sprint(page) != "[90 70]" || next != "70" {
		t.Fatalf("first page %v next %q", page, next)
	}
	page, next = api.PageNewest(items, id, 70, 2)
	if fmt.Sprint(page) != "[50 30]" || next != "30" {
		t.Fatalf("second page %v next %q", page, next)
	}
	page, next = api.PageNewest(items, id, 30, 2)
	if fmt.Sprint(page) != "[10]" || next != "" {
		t.Fatalf("last page %v next %q", page, next)
	}
	if page, _ = api.PageNewest(items, id, 60, 0); fmt.Sprint(page) != "[50 30 10]" {
		t.Fatalf("after a pruned item: %v", page)
	}
	if _, err := api.IndexCursor("x"); err == nil {
		t.Fatal("a cursor that is not an index must be refused")
	}
}
