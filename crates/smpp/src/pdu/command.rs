//! command_id and command_status values (SMPP 3.4 sections 5.1.2 and 5.1.3).

use std::fmt;

macro_rules! u32_enum {
    (
        $(#[$meta:meta])*
        $name:ident, other = $other_doc:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $spec:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            #[doc = $other_doc]
            Other(u32),
        }

        impl From<u32> for $name {
            fn from(value: u32) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Other(other),
                }
            }
        }

        impl From<$name> for u32 {
            fn from(value: $name) -> u32 {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Other(other) => other,
                }
            }
        }

        impl $name {
            /// The name the specification uses, or `None` for [`Self::Other`].
            pub fn spec_name(self) -> Option<&'static str> {
                match self {
                    $( $name::$variant => Some($spec), )+
                    $name::Other(_) => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let value = u32::from(*self);
                match self.spec_name() {
                    Some(name) => write!(f, "{name} (0x{value:08x})"),
                    None => write!(f, "0x{value:08x}"),
                }
            }
        }
    };
}

u32_enum! {
    /// The command_id of a PDU. Responses have bit 31 set.
    CommandId, other = "A command this crate does not model (answered with generic_nack when it is a request)." {
        /// generic_nack
        GenericNack = 0x8000_0000 => "generic_nack",
        /// bind_receiver
        BindReceiver = 0x0000_0001 => "bind_receiver",
        /// bind_receiver_resp
        BindReceiverResp = 0x8000_0001 => "bind_receiver_resp",
        /// bind_transmitter
        BindTransmitter = 0x0000_0002 => "bind_transmitter",
        /// bind_transmitter_resp
        BindTransmitterResp = 0x8000_0002 => "bind_transmitter_resp",
        /// submit_sm
        SubmitSm = 0x0000_0004 => "submit_sm",
        /// submit_sm_resp
        SubmitSmResp = 0x8000_0004 => "submit_sm_resp",
        /// deliver_sm
        DeliverSm = 0x0000_0005 => "deliver_sm",
        /// deliver_sm_resp
        DeliverSmResp = 0x8000_0005 => "deliver_sm_resp",
        /// unbind
        Unbind = 0x0000_0006 => "unbind",
        /// unbind_resp
        UnbindResp = 0x8000_0006 => "unbind_resp",
        /// bind_transceiver
        BindTransceiver = 0x0000_0009 => "bind_transceiver",
        /// bind_transceiver_resp
        BindTransceiverResp = 0x8000_0009 => "bind_transceiver_resp",
        /// outbind
        Outbind = 0x0000_000B => "outbind",
        /// enquire_link
        EnquireLink = 0x0000_0015 => "enquire_link",
        /// enquire_link_resp
        EnquireLinkResp = 0x8000_0015 => "enquire_link_resp",
    }
}

impl CommandId {
    /// True for response PDUs (bit 31 of command_id set).
    pub fn is_response(self) -> bool {
        u32::from(self) & 0x8000_0000 != 0
    }
}

u32_enum! {
    /// The command_status of a PDU: zero for success, an error code otherwise.
    CommandStatus, other = "A status this crate does not name (vendor-specific codes live here)." {
        /// No error.
        EsmeRok = 0x0000_0000 => "ESME_ROK",
        /// Message length is invalid.
        EsmeRinvmsglen = 0x0000_0001 => "ESME_RINVMSGLEN",
        /// Command length is invalid.
        EsmeRinvcmdlen = 0x0000_0002 => "ESME_RINVCMDLEN",
        /// Invalid command ID.
        EsmeRinvcmdid = 0x0000_0003 => "ESME_RINVCMDID",
        /// Incorrect bind status for the given command.
        EsmeRinvbndsts = 0x0000_0004 => "ESME_RINVBNDSTS",
        /// ESME already in bound state.
        EsmeRalybnd = 0x0000_0005 => "ESME_RALYBND",
        /// Invalid priority flag.
        EsmeRinvprtflg = 0x0000_0006 => "ESME_RINVPRTFLG",
        /// Invalid registered delivery flag.
        EsmeRinvregdlvflg = 0x0000_0007 => "ESME_RINVREGDLVFLG",
        /// System error.
        EsmeRsyserr = 0x0000_0008 => "ESME_RSYSERR",
        /// Invalid source address.
        EsmeRinvsrcadr = 0x0000_000A => "ESME_RINVSRCADR",
        /// Invalid destination address.
        EsmeRinvdstadr = 0x0000_000B => "ESME_RINVDSTADR",
        /// Message ID is invalid.
        EsmeRinvmsgid = 0x0000_000C => "ESME_RINVMSGID",
        /// Bind failed.
        EsmeRbindfail = 0x0000_000D => "ESME_RBINDFAIL",
        /// Invalid password.
        EsmeRinvpaswd = 0x0000_000E => "ESME_RINVPASWD",
        /// Invalid system ID.
        EsmeRinvsysid = 0x0000_000F => "ESME_RINVSYSID",
        /// cancel_sm failed.
        EsmeRcancelfail = 0x0000_0011 => "ESME_RCANCELFAIL",
        /// replace_sm failed.
        EsmeRreplacefail = 0x0000_0013 => "ESME_RREPLACEFAIL",
        /// Message queue full.
        EsmeRmsgqful = 0x0000_0014 => "ESME_RMSGQFUL",
        /// Invalid service type.
        EsmeRinvsertyp = 0x0000_0015 => "ESME_RINVSERTYP",
        /// Invalid number of destinations.
        EsmeRinvnumdests = 0x0000_0033 => "ESME_RINVNUMDESTS",
        /// Invalid distribution list name.
        EsmeRinvdlname = 0x0000_0034 => "ESME_RINVDLNAME",
        /// Destination flag is invalid.
        EsmeRinvdestflag = 0x0000_0040 => "ESME_RINVDESTFLAG",
        /// Invalid submit with replace request.
        EsmeRinvsubrep = 0x0000_0042 => "ESME_RINVSUBREP",
        /// Invalid esm_class field data.
        EsmeRinvesmclass = 0x0000_0043 => "ESME_RINVESMCLASS",
        /// Cannot submit to distribution list.
        EsmeRcntsubdl = 0x0000_0044 => "ESME_RCNTSUBDL",
        /// submit_sm or submit_multi failed.
        EsmeRsubmitfail = 0x0000_0045 => "ESME_RSUBMITFAIL",
        /// Invalid source address TON.
        EsmeRinvsrcton = 0x0000_0048 => "ESME_RINVSRCTON",
        /// Invalid source address NPI.
        EsmeRinvsrcnpi = 0x0000_0049 => "ESME_RINVSRCNPI",
        /// Invalid destination address TON.
        EsmeRinvdstton = 0x0000_0050 => "ESME_RINVDSTTON",
        /// Invalid destination address NPI.
        EsmeRinvdstnpi = 0x0000_0051 => "ESME_RINVDSTNPI",
        /// Invalid system_type field.
        EsmeRinvsystyp = 0x0000_0053 => "ESME_RINVSYSTYP",
        /// Invalid replace_if_present flag.
        EsmeRinvrepflag = 0x0000_0054 => "ESME_RINVREPFLAG",
        /// Invalid number of messages.
        EsmeRinvnummsgs = 0x0000_0055 => "ESME_RINVNUMMSGS",
        /// Throttling error (the ESME exceeded its allowed message limits).
        EsmeRthrottled = 0x0000_0058 => "ESME_RTHROTTLED",
        /// Invalid scheduled delivery time.
        EsmeRinvsched = 0x0000_0061 => "ESME_RINVSCHED",
        /// Invalid message validity period.
        EsmeRinvexpiry = 0x0000_0062 => "ESME_RINVEXPIRY",
        /// Predefined message invalid or not found.
        EsmeRinvdftmsgid = 0x0000_0063 => "ESME_RINVDFTMSGID",
        /// ESME receiver temporary application error.
        EsmeRxTAppn = 0x0000_0064 => "ESME_RX_T_APPN",
        /// ESME receiver permanent application error.
        EsmeRxPAppn = 0x0000_0065 => "ESME_RX_P_APPN",
        /// ESME receiver reject message error.
        EsmeRxRAppn = 0x0000_0066 => "ESME_RX_R_APPN",
        /// query_sm request failed.
        EsmeRqueryfail = 0x0000_0067 => "ESME_RQUERYFAIL",
        /// Error in the optional part of the PDU body.
        EsmeRinvoptparstream = 0x0000_00C0 => "ESME_RINVOPTPARSTREAM",
        /// Optional parameter not allowed.
        EsmeRoptparnotallwd = 0x0000_00C1 => "ESME_ROPTPARNOTALLWD",
        /// Invalid parameter length.
        EsmeRinvparlen = 0x0000_00C2 => "ESME_RINVPARLEN",
        /// Expected optional parameter missing.
        EsmeRmissingoptparam = 0x0000_00C3 => "ESME_RMISSINGOPTPARAM",
        /// Invalid optional parameter value.
        EsmeRinvoptparamval = 0x0000_00C4 => "ESME_RINVOPTPARAMVAL",
        /// Delivery failure (used in data_sm_resp).
        EsmeRdeliveryfailure = 0x0000_00FE => "ESME_RDELIVERYFAILURE",
        /// Unknown error.
        EsmeRunknownerr = 0x0000_00FF => "ESME_RUNKNOWNERR",
    }
}

impl CommandStatus {
    /// True for ESME_ROK.
    pub fn is_ok(self) -> bool {
        self == CommandStatus::EsmeRok
    }

    /// True when the SMSC asks the ESME to slow down and retry later:
    /// ESME_RTHROTTLED or ESME_RMSGQFUL.
    pub fn is_throttling(self) -> bool {
        matches!(
            self,
            CommandStatus::EsmeRthrottled | CommandStatus::EsmeRmsgqful
        )
    }
}
