{{/* The leader-election Lease: opsync's default --leader-election-id (controllers/constants.py), which the
chart does not override. RBAC grants get and update on this name only. */}}
{{- define "opsync.leaseName" -}}
c26807fd.onepassword.com
{{- end -}}

{{/* The ServiceAccount's user name, as admission sees the requests opsync makes. */}}
{{- define "opsync.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "opsync.serviceAccountName" . }}
{{- end -}}
