// Package testtier lets a test skip a tier this machine cannot run, unless CI has said every tier must run.
package testtier
