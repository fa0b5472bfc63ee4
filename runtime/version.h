/* The one place the version is written. */
#ifndef DCONN_VERSION_H
#define DCONN_VERSION_H
#define DCONN_VERSION "0.1.0"
#endif
