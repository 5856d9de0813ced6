// Package notify tells the outside world what builds and deployments do: webhooks, Slack and forge commit statuses, delivered by the leader.
package notify
