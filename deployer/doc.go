// Package deployer makes each node's installed releases equal the desired ones: fetch, install, hooks,
// supervision and health; on the leader it also drives rollouts batch by batch.
package deployer
