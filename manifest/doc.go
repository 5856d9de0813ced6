// Package manifest reads an app's build and deploy recipe from shoal.yml or an unchanged distelli-manifest.yml.
package manifest
