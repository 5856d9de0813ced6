// Package api is a node's HTTP API: the server and its limits, routes, token authentication, the mapping from
// errors to HTTP statuses, request parsing and paging, and the routes of the node itself.
package api
