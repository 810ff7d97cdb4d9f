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

{{/*
A toggle of the connect chart: a boolean, or a string such as "{{ .Values.operator.create }}", rendered and
compared with "true"; unset (nil) means `default`. Call with (list <value> <default> $).
*/}}
{{- define "opsync.toggle" -}}
{{- $value := index . 0 -}}
{{- if kindIs "invalid" $value -}}{{- $value = index . 1 -}}{{- end -}}
{{- if kindIs "string" $value -}}{{- $value = eq (tpl $value (index . 2)) "true" -}}{{- end -}}
{{- if $value -}}true{{- end -}}
{{- end -}}

{{/* Whether the operator is installed: `operator.create` of the connect chart, true unless set false. */}}
{{- define "opsync.enabled" -}}
{{- include "opsync.toggle" (list (.Values.operator | default dict).create true $) -}}
{{- end -}}

{{/* MANAGE_CONNECT=true: the manageConnect value, or the variable among customEnvVars (the Go operator's way) or extraEnv. */}}
{{- define "opsync.manageConnect" -}}
{{- $c := include "opsync.config" . | fromYaml -}}
{{- $on := $c.manageConnect -}}
{{- range concat ($c.customEnvVars | default list) ($c.extraEnv | default list) -}}
{{- if and (eq (toString .name) "MANAGE_CONNECT") (hasKey . "value") -}}
{{- $on = has (lower (toString .value)) (list "1" "t" "true") -}}
{{- end -}}
{{- end -}}
{{- if $on -}}true{{- end -}}
{{- end -}}

{{/* The operator Deployment's name: the connect chart's `operator.applicationName`, else the full name. */}}
{{- define "opsync.deploymentName" -}}
{{- $c := include "opsync.config" . | fromYaml -}}
{{- default (include "opsync.fullname" .) $c.applicationName -}}
{{- end -}}

{{- define "opsync.serviceAccountName" -}}
{{- $c := include "opsync.config" . | fromYaml -}}
{{- default (include "opsync.fullname" .) $c.serviceAccount.name -}}
{{- end -}}

{{/* The ServiceAccount is created unless serviceAccount.create says otherwise (then it must be named). */}}
{{- define "opsync.createServiceAccount" -}}
{{- $c := include "opsync.config" . | fromYaml -}}
{{- include "opsync.toggle" (list $c.serviceAccount.create true $) -}}
{{- end -}}

{{/*
OP_CONNECT_HOST. connect.host is a URL, used as it is, or (the connect chart's way) a bare host name, which
becomes http://<host>:<connect.api.httpPort>, or https://<host>:<connect.api.httpsPort> with connect.tls.enabled.
*/}}
{{- define "opsync.connectURL" -}}
{{- $connect := .Values.connect -}}
{{- $host := toString $connect.host -}}
{{- if regexMatch "^[a-zA-Z][-+.a-zA-Z0-9]*://" $host -}}
{{- $host -}}
{{- else if ($connect.tls | default dict).enabled -}}
https://{{ $host }}:{{ $connect.api.httpsPort | int }}
{{- else -}}
http://{{ $host }}:{{ $connect.api.httpPort | int }}
{{- end -}}
{{- end -}}

{{/* Labels of Connect's pods (as the connect chart sets them) and of its other objects. */}}
{{- define "opsync.connectSelectorLabels" -}}
app: {{ (include "opsync.connect" . | fromYaml).applicationName }}
{{- end -}}

{{- define "opsync.connectLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ (include "opsync.connect" . | fromYaml).applicationName }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: connect
app.kubernetes.io/part-of: opsync
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* imagePullSecrets: the connect chart's plain names and Kubernetes' {name: ...} entries, as a YAML list. */}}
{{- define "opsync.imagePullSecrets" -}}
{{- $secrets := list -}}
{{- range . -}}
{{- $secrets = append $secrets (kindIs "map" . | ternary . (dict "name" (toString .))) -}}
{{- end -}}
{{- toYaml $secrets -}}
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
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
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

{{/*
Checks of settings the schema cannot express: values of the connect chart that opsync cannot honour are refused
here with what to use instead (docs/helm.md lists every value of that chart and what it does here).
*/}}
{{- define "opsync.validate" -}}
{{- $c := include "opsync.config" . | fromYaml -}}
{{- if and $c.watchNamespaceSelector $c.watchNamespace -}}
{{- fail "watchNamespace and watchNamespaceSelector are both set: give a namespace list or a label selector on namespaces, not both" -}}
{{- end -}}
{{- $connect := .Values.connect -}}
{{- if not (or (include "opsync.enabled" .) $connect.create) -}}
{{- fail "operator.create and connect.create are both false: nothing to install (operator.create: true installs opsync)" -}}
{{- end -}}
{{- $host := toString $connect.host -}}
{{- if regexMatch "^[a-zA-Z][-+.a-zA-Z0-9]*://" $host -}}
{{- if not (regexMatch "^https?://[^/?#@]+(/.*)?$" $host) -}}
{{- fail (printf "connect.host must be an http:// or https:// URL or a bare host name, got %q" $host) -}}
{{- end -}}
{{- if and ($connect.tls | default dict).enabled (hasPrefix "http://" $host) -}}
{{- fail (printf "connect.tls.enabled is true but connect.host is %q: give https://..., or a bare host name (then https://<host>:<connect.api.httpsPort> is used)" $host) -}}
{{- end -}}
{{- else if not (regexMatch `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$` $host) -}}
{{- fail (printf "connect.host must be a bare host name (the port comes from connect.api.httpPort/httpsPort) or a URL such as http://%s, got %q" $host $host) -}}
{{- end -}}
{{- if include "opsync.enabled" . -}}
{{- if not (has (toString $c.authMethod) (list "connect" "service-account")) -}}
{{- fail (printf "authMethod must be connect or service-account, got %q" (toString $c.authMethod)) -}}
{{- end -}}
{{- if ($c.hpa | default dict).enabled -}}
{{- fail "operator.hpa.enabled: only the replica holding the leader Lease works, so autoscaling adds nothing; set replicas (standbys) instead" -}}
{{- end -}}
{{- if and $c.imageRepository (not (has (toString $c.imageRepository) (list "docker.io/1password/onepassword-operator" "1password/onepassword-operator"))) -}}
{{- fail (printf "operator.imageRepository %q: opsync runs its own image, not the Go operator's; set image.repository (and image.tag) to your copy of ghcr.io/opsync/opsync and remove operator.imageRepository" (toString $c.imageRepository)) -}}
{{- end -}}
{{- if and (not (include "opsync.createServiceAccount" .)) (not $c.serviceAccount.name) -}}
{{- fail "serviceAccount.create is false: set serviceAccount.name to the ServiceAccount opsync should run as" -}}
{{- end -}}
{{- end -}}
{{- $given := omit .Values.connect "host" "create" "api" "tls" -}}
{{- with omit (.Values.connect.api | default dict) "httpPort" "httpsPort" -}}{{- $_ := set $given "api" . -}}{{- end -}}
{{- with omit (.Values.connect.tls | default dict) "enabled" -}}{{- $_ := set $given "tls" . -}}{{- end -}}
{{- if and $given (not (hasKey .Values.connect "create")) -}}
{{- fail (printf "connect.%s configures the Connect server, which this chart deploys only with connect.create: true (the connect chart's default, false here); set connect.create: true to deploy Connect with opsync, or connect.create: false if Connect runs elsewhere (then connect.%s has no effect)" (first (keys $given | sortAlpha)) (first (keys $given | sortAlpha))) -}}
{{- end -}}
{{- $connect = include "opsync.connect" . | fromYaml -}}
{{- if $connect.create -}}
{{- if and $connect.credentials $connect.credentials_base64 -}}
{{- fail "connect.credentials and connect.credentials_base64 are both set: give only one" -}}
{{- end -}}
{{- if ($connect.ingress | default dict).enabled -}}
{{- fail "connect.ingress.enabled: opsync's chart keeps Connect inside the cluster (its NetworkPolicy admits only opsync); to expose Connect, create your own Ingress with connect.networkPolicy.from, or deploy Connect with 1Password's connect chart (connect.create: false)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A PodDisruptionBudget's maxUnavailable or minAvailable, as the connect chart picks: maxUnavailable when set and
not 0, else minAvailable when set, else maxUnavailable 1. Both set and not 0 is refused rather than one of them
silently dropped. Call with (list "<values key>" <pdb map>).
*/}}
{{- define "opsync.disruptionBudget" -}}
{{- $key := index . 0 -}}
{{- $pdb := index . 1 -}}
{{- $max := $pdb.maxUnavailable -}}
{{- $min := $pdb.minAvailable -}}
{{- if and $max $min -}}
{{- fail (printf "%s.maxUnavailable (%v) and %s.minAvailable (%v) are both set: a PodDisruptionBudget takes one; set the other to null or 0" $key $max $key $min) -}}
{{- end -}}
{{- if $max -}}
maxUnavailable: {{ kindIs "string" $max | ternary $max (int $max) }}
{{- else if not (kindIs "invalid" $min) -}}
minAvailable: {{ kindIs "string" $min | ternary $min (int $min) }}
{{- else -}}
maxUnavailable: {{ kindIs "invalid" $max | ternary 1 (int $max) }}
{{- end -}}
{{- end -}}

{{/* The connect chart's defaults of Connect's own settings (used with connect.create). */}}
{{- define "opsync.connectDefaults" -}}
create: false
replicas: 1
api:
  name: connect-api
  imageRepository: docker.io/1password/connect-api
  resources:
    limits:
      memory: 128Mi
    requests:
      cpu: 0.2
  logLevel: info
  serviceMonitor:
    enabled: false
    interval: 30s
    path: /metrics
    params: {}
    annotations: {}
  securityContext:
    capabilities:
      drop: [ALL]
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
sync:
  name: connect-sync
  imageRepository: docker.io/1password/connect-sync
  resources: {}
  httpPort: 8081
  logLevel: info
  securityContext:
    capabilities:
      drop: [ALL]
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
applicationName: onepassword-connect
serviceType: ClusterIP
serviceAnnotations: {}
serviceAccount:
  create: false
  annotations: {}
  name: onepassword-connect
credentialsName: op-credentials
credentialsKey: 1password-credentials.json
imagePullPolicy: IfNotPresent
imagePullSecrets: []
version: "1.8.2"
hpa:
  enabled: false
  annotations: {}
  minReplicas: 1
  maxReplicas: 3
  avgMemoryUtilization: 50
  avgCpuUtilization: 50
  behavior: {}
pdb:
  enabled: false
  annotations: {}
  maxUnavailable: 1
  minAvailable: 0
probes:
  liveness: true
  readiness: true
podSecurityContext:
  fsGroup: 999
  runAsUser: 999
  runAsGroup: 999
  runAsNonRoot: true
  seccompProfile:
    type: RuntimeDefault
tolerations: []
dataVolume:
  name: shared-data
  type: emptyDir
  values: {}
tls:
  secret: op-connect-tls
ingress:
  enabled: false
profiler:
  enabled: false
  interval: 6h
  keepLast: 12
customEnvVars: []
networkPolicy:
  enabled: true
  from: []
{{- end -}}

{{/* The effective connect settings: the values over "opsync.connectDefaults". */}}
{{- define "opsync.connect" -}}
{{- $connect := include "opsync.connectDefaults" . | fromYaml -}}
{{- $_ := include "opsync.deepMerge" (list $connect (deepCopy .Values.connect)) -}}
{{- toYaml $connect -}}
{{- end -}}

{{/*
An env value as a string (none: ""): Kubernetes takes strings only, and YAML numbers reach templates as floats (123 would
print as 123, 1234567890 as 1.23456789e+09), so whole numbers print without exponent. Quote long numbers.
*/}}
{{- define "opsync.envValue" -}}
{{- if kindIs "invalid" . -}}
{{- else if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- printf "%.0f" . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}
