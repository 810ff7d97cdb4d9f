{{/*
The effective settings: the top-level values with the connect-chart style `operator:` block merged over them.
Templates read settings only through this: `{{- $c := include "opsync.config" . | fromYaml }}`.
(Numbers come back as floats: print them through `int`.)
*/}}
{{- define "opsync.config" -}}
{{- $config := omit (deepCopy .Values) "operator" "global" -}}
{{- $_ := include "opsync.deepMerge" (list $config (deepCopy (.Values.operator | default dict))) -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
Merge map (index . 1) into map (index . 0) in place: nested maps merge, everything else is replaced. (Sprig's
mergeOverwrite would not let `false`, 0 or "" in the operator block override a top-level value.)
*/}}
{{- define "opsync.deepMerge" -}}
{{- $dst := index . 0 -}}
{{- range $key, $value := index . 1 -}}
{{- if and (kindIs "map" $value) (kindIs "map" (get $dst $key)) -}}
{{- $_ := include "opsync.deepMerge" (list (get $dst $key) $value) -}}
{{- else -}}
{{- $_ := set $dst $key $value -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "opsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "opsync.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Names of cluster-scoped objects carry the release namespace: one release per namespace may coexist. */}}
{{- define "opsync.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "opsync.fullname" .) | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{- define "opsync.serviceAccountName" -}}
{{- $c := include "opsync.config" . | fromYaml -}}
{{- default (include "opsync.fullname" .) $c.serviceAccount.name -}}
{{- end -}}

{{- define "opsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "opsync.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "opsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: opsync
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The watched namespaces (each `tpl`-rendered, as in the connect chart), as a YAML list. */}}
{{- define "opsync.watchNamespaces" -}}
{{- $c := include "opsync.config" . | fromYaml -}}
{{- $names := list -}}
{{- range $c.watchNamespace -}}
{{- $names = append $names (tpl (toString .) $) -}}
{{- end -}}
{{- toYaml (uniq $names) -}}
{{- end -}}

{{/* Leader election: the leaderElection value, forced on with more than one replica. */}}
{{- define "opsync.leaderElection" -}}
{{- $c := include "opsync.config" . | fromYaml -}}
{{- if gt (int $c.replicas) 1 -}}
{{- if not $c.leaderElection -}}
{{- fail "leaderElection cannot be false with replicas > 1: only one replica may reconcile" -}}
{{- end -}}
true
{{- else if $c.leaderElection -}}
true
{{- end -}}
{{- end -}}

{{/* Checks of settings the schema cannot express across the operator block and the top level. */}}
{{- define "opsync.validate" -}}
{{- $c := include "opsync.config" . | fromYaml -}}
{{- if not (has (toString $c.authMethod) (list "connect" "service-account")) -}}
{{- fail (printf "authMethod must be connect or service-account, got %q" (toString $c.authMethod)) -}}
{{- end -}}
{{- if and (eq (toString $c.authMethod) "connect") (not (regexMatch "^https?://[^/?#@]+(/.*)?$" (toString $c.connect.host))) -}}
{{- fail (printf "connect.host must be an http:// or https:// URL, got %q" (toString $c.connect.host)) -}}
{{- end -}}
{{- end -}}
