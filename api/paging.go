package api

import (
	"net/http"
	"strconv"

	"github.com/shoal-ci/shoal/errs"
)

// Paging of list routes. A list answers a JSON array, in a stable order, of at most ?limit items that come after
// ?cursor; when more follow, the X-Shoal-Next-Cursor header carries the cursor of the next page (no header: this
// was the last page). A cursor is opaque to clients: pass back what the header said.
const (
	// NextCursorHeader names the response header that carries the next page's cursor.
	NextCursorHeader = "X-Shoal-Next-Cursor"
	// MaxPageLimit is the largest ?limit a list accepts.
	MaxPageLimit = 1000
)

// PageParams reads ?limit and ?cursor. def is the limit when none is given; 0, given or default, is no limit
// (the apps and environments lists keep answering everything to clients that do not page).
func PageParams(r *http.Request, def int) (limit int, cursor string, err error) {
	q := r.URL.Query()
	limit = def
	if v := q.Get("limit"); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 0 || n > MaxPageLimit {
			return 0, "", errs.New(errs.BadRequest, "limit %q is not valid: give a number from 1 to %d (0: no limit)", v, MaxPageLimit)
		}
		limit = n
	}
	return limit, q.Get("cursor"), nil
}

// IndexCursor reads a cursor of a list ordered newest first by creation index (builds, releases, deployments):
// the creation index of the last item of the previous page. "" is the first page.
func IndexCursor(cursor string) (uint64, error) {
	if cursor == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(cursor, 10, 64)
	if err != nil || n == 0 {
		return 0, errs.New(errs.BadRequest, "cursor %q is not valid: pass back the %s header of the previous page", cursor, NextCursorHeader)
	}
	return n, nil
}

// SetNextCursor announces the next page, if there is one (next != "").
func SetNextCursor(w http.ResponseWriter, next string) {
	if next != "" {
		w.Header().Set(NextCursorHeader, next)
	}
}

// PageNewest pages items already sorted newest first by creation index (index gives an item's): it keeps those
// older than cursor (0: from the newest), at most limit of them (0: all), and returns the next page's cursor.
func PageNewest[T any](items []T, index func(T) uint64, cursor uint64, limit int) ([]T, string) {
	start := 0
	if cursor > 0 {
		for start < len(items) && index(items[start]) >= cursor {
			start++
		}
	}
	items = items[start:]
	if limit > 0 && len(items) > limit {
		return items[:limit], strconv.FormatUint(index(items[limit-1]), 10)
	}
	return items, ""
}
