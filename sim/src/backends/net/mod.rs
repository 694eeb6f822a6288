//! netback, the virtual switch, pcap capture and host port forwarding. Being written.
